//! `molt build NAME --external`: the image is built on this machine with
//! the local `docker` and pushed straight to a registry (Molt's own, with a
//! credential the server issues for this build, or `--to` a repository of
//! the user's), then registered as a release by its digest. The source
//! never passes through the server.

use super::build::{package, BuildArgs};
use super::client::{usage, Client, FAILED, OK};
use super::output::short_digest;
use anyhow::{anyhow, Context, Result};
use molt_core::api::{PushTarget, ReleaseView};
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub async fn build(client: &Client, args: &BuildArgs) -> Result<u8> {
    let (context, dockerfile) = package(client, &args.name, &args.dir, &args.source).await?;
    // A client config of its own for Molt's registry: the issued
    // credential never lands in the user's docker config.
    let config = tempfile::Builder::new()
        .prefix("molt-docker-config-")
        .tempdir()
        .context("cannot create a temporary docker client config")?;
    let (repository, config_dir) = match &args.to {
        Some(to) => (own_repository(to)?, None),
        None => {
            let target: PushTarget = client
                .post(&["apps", &args.name, "push-target"], &serde_json::json!({}))
                .await?
                .decode("a push target")?;
            eprintln!(
                "Logging in to Molt's registry {} (a credential for this build, valid {} min)…",
                target.registry,
                target.expires_in_secs / 60
            );
            let mut login = docker(Some(config.path()));
            login.args([
                "login",
                &target.registry,
                "--username",
                &target.username,
                "--password-stdin",
            ]);
            run(login, Some(target.password.as_bytes()), false).await?;
            (target.repository, Some(config.path()))
        }
    };
    let tag = format!(
        "{repository}:build-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );

    eprintln!("Building {tag} with the local docker…");
    let mut build = docker(config_dir);
    build.args(["build", "--tag", &tag, "--file", &dockerfile]);
    for arg in &args.source.build_args {
        build.args(["--build-arg", arg]);
    }
    build.arg("-");
    let tar = tokio::fs::read(&context.path).await?;
    drop(context);
    if let Err(e) = run(build, Some(&tar), true).await {
        eprintln!("The build failed; nothing serving changed.");
        return Err(e);
    }

    eprintln!("Pushing {tag}…");
    let mut push = docker(config_dir);
    push.args(["push", &tag]);
    let pushed = run(push, None, true).await;
    // The local tag is only the way to push: it goes either way.
    let _ = docker(None).args(["rmi", &tag]).output().await;
    let pushed = pushed.with_context(|| {
        format!("pushing {tag} failed: check that the registry answers, and for --to that `docker login` was done for it")
    })?;
    let digest = pushed_digest(&pushed).ok_or_else(|| {
        anyhow!("`docker push {tag}` did not report a digest; register it with its digest by hand")
    })?;
    let image = format!("{tag}@{digest}");

    let release: ReleaseView = client
        .post(
            &["apps", &args.name, "releases"],
            &serde_json::json!({ "image": image }),
        )
        .await?
        .decode("a release")?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&release)?);
    } else {
        outln!(
            "Registered release {} of {} (external build, {}). Promote it with: molt releases promote {} {}",
            release.id,
            args.name,
            short_digest(Some(&release.digest)),
            args.name,
            release.id
        );
    }
    Ok(if release.id.is_empty() { FAILED } else { OK })
}

/// `--to HOST/REPO`: a repository of a registry (a host with a dot, a
/// port, or `localhost`), without a tag or digest (the build picks its tag).
fn own_repository(to: &str) -> Result<String> {
    let host = to.split('/').next().unwrap_or_default();
    let is_host = host.contains('.') || host.contains(':') || host == "localhost";
    if !is_host
        || !to.contains('/')
        || to.contains('@')
        || to.rsplit('/').next().is_some_and(|last| last.contains(':'))
    {
        return Err(usage(format!(
            "--to {to} is not a repository of a registry: give HOST/REPO without a tag, e.g. --to registry.example.com/team/web"
        )));
    }
    Ok(to.to_string())
}

fn docker(config: Option<&Path>) -> Command {
    let mut cmd = Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Runs a docker command; its output goes to stderr as it comes (`show`)
/// and is returned. A failure carries the command's last lines.
async fn run(mut cmd: Command, input: Option<&[u8]>, show: bool) -> Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        anyhow!("cannot run `docker` ({e}): --external builds with the local Docker CLI; install it, or build on the server with `molt build` without --external")
    })?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(bytes).await?;
        drop(stdin);
    }
    let out = child.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if show {
        eprint!("{stdout}");
    }
    if !out.status.success() {
        let said = if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        };
        let tail: Vec<&str> = said.lines().rev().take(15).collect();
        return Err(anyhow!(
            "docker failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(stdout)
}

/// The digest `docker push` reports: `TAG: digest: sha256:… size: N`.
fn pushed_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let rest = line.split("digest: ").nth(1)?;
        let digest = rest.split_whitespace().next()?;
        digest.starts_with("sha256:").then(|| digest.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pushed_digest_is_read_from_dockers_output() {
        let out = "The push refers to repository [127.0.0.1:5500/web]\n5f70bf18a086: Pushed\nbuild-1: digest: sha256:0123abcd size: 528\n";
        assert_eq!(pushed_digest(out).as_deref(), Some("sha256:0123abcd"));
        assert_eq!(pushed_digest("nothing"), None);
    }

    #[test]
    fn own_repositories_need_a_registry_host() {
        assert!(own_repository("registry.example.com/team/web").is_ok());
        assert!(own_repository("127.0.0.1:5000/web").is_ok());
        assert!(own_repository("web").is_err());
        assert!(own_repository("team/web").is_err());
        assert!(own_repository("registry.example.com/web:v1").is_err());
        assert!(own_repository("registry.example.com/web@sha256:00").is_err());
    }
}
