//! Attached processes: `molt run`'s one-off containers and `molt exec`'s
//! commands in a serving container, with their output as it comes, their
//! stdin, and their exit code.

use super::{engine_message, is_not_found, ContainerSpec, Runtime, LABEL_INSTANCE, LABEL_ROLE};
use anyhow::{anyhow, Result};
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptions, ListContainersOptions, ResizeContainerTTYOptions, WaitContainerOptions,
};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::pin::Pin;
use tokio::io::AsyncWrite;

/// What makes a container a one-off: its command and how it is attached.
#[derive(Debug, Clone)]
pub struct OneOff {
    /// The run record it belongs to (label `molt.run`).
    pub run_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    /// Whether its stdin stays open for the client.
    pub stdin: bool,
}

/// A piece of an attached process's output.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// An attached process: its output until it ends, and its stdin.
pub struct Attached {
    pub output: BoxStream<'static, Result<Output>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

fn output(item: Result<bollard::container::LogOutput, bollard::errors::Error>) -> Result<Output> {
    use bollard::container::LogOutput;
    match item {
        Ok(LogOutput::StdErr { message }) => Ok(Output::Stderr(message)),
        Ok(
            LogOutput::StdOut { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message },
        ) => Ok(Output::Stdout(message)),
        Err(e) => Err(anyhow!("the engine's stream broke: {}", engine_message(&e))),
    }
}

impl Runtime {
    /// Creates a one-off container, attaches to it before it starts (so no
    /// output is lost), then starts it; returns its id and its streams. A
    /// container that cannot be attached or started is removed again.
    pub async fn run_attached(
        &self,
        spec: &ContainerSpec,
        one_off: &OneOff,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        let id = self.create(spec, Some(one_off)).await?;
        let attached = async {
            let options = AttachContainerOptions {
                stream: true,
                stdin: one_off.stdin,
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let io = self
                .docker
                .attach_container(&id, Some(options))
                .await
                .map_err(|e| {
                    anyhow!(
                        "the engine could not attach to the container: {}",
                        engine_message(&e)
                    )
                })?;
            self.docker.start_container(&id, None).await.map_err(|e| {
                anyhow!(
                    "the engine could not start the container: {}",
                    engine_message(&e)
                )
            })?;
            if let (true, Some((cols, rows))) = (one_off.tty, size) {
                let _ = self
                    .docker
                    .resize_container_tty(
                        &id,
                        ResizeContainerTTYOptions {
                            h: rows as i32,
                            w: cols as i32,
                        },
                    )
                    .await;
            }
            Ok::<_, anyhow::Error>(Attached {
                output: io.output.map(output).boxed(),
                input: io.input,
            })
        }
        .await;
        match attached {
            Ok(a) => Ok((id, a)),
            Err(e) => {
                let _ = self.remove(&id).await;
                Err(e)
            }
        }
    }

    /// Waits until a container has exited; its exit code.
    pub async fn wait_exit(&self, id: &str) -> Result<i64> {
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying it.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(anyhow!(
                "cannot wait for container {id}: {}",
                engine_message(&e)
            )),
            None => Err(anyhow!(
                "the engine ended the wait for container {id} without an exit code"
            )),
        }
    }

    /// Starts `cmd` in a running container (the engine's exec); returns the
    /// exec's id and its streams.
    pub async fn exec_attached(
        &self,
        container: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match &e {
                e if is_not_found(e) => anyhow!(
                    "the container {container} is gone: the App may be deploying; try again"
                ),
                e => anyhow!("the engine refused the command: {}", engine_message(e)),
            })?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "the engine could not start the command: {}",
                    engine_message(&e)
                )
            })?;
        let StartExecResults::Attached { output: out, input } = started else {
            return Err(anyhow!("the engine started the command detached"));
        };
        if let (true, Some((cols, rows))) = (tty, size) {
            let _ = self
                .docker
                .resize_exec(
                    &created.id,
                    bollard::exec::ResizeExecOptions {
                        height: rows,
                        width: cols,
                    },
                )
                .await;
        }
        Ok((
            created.id,
            Attached {
                output: out.map(output).boxed(),
                input,
            },
        ))
    }

    /// An exec's exit code once it ended (`None` while it runs).
    pub async fn exec_exit(&self, exec_id: &str) -> Result<Option<i64>> {
        let inspect = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| anyhow!("cannot inspect the command: {}", engine_message(&e)))?;
        if inspect.running.unwrap_or(false) {
            return Ok(None);
        }
        Ok(inspect.exit_code)
    }

    /// This installation's one-off containers (ids), whatever their App.
    pub async fn list_runs(&self) -> Result<Vec<String>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{LABEL_INSTANCE}={}", self.instance),
                    format!("{LABEL_ROLE}={}", super::ROLE_RUN),
                ],
            )])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| anyhow!("cannot list containers: {}", engine_message(&e)))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}
