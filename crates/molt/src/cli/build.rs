//! `molt build` (source to a release on the server), `molt releases` (list
//! and promote) and `molt deploy NAME --build` (both in one step).

use super::client::{usage, Client, FAILED, OK};
use super::follow;
use super::output::{short_digest, short_time, table};
use super::source;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use molt_core::api::{BuildOptions, BuildView, DeployStarted, ReleaseView};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a running build's output is asked for.
const POLL: Duration = Duration::from_millis(200);

/// What to build and how (shared by `molt build` and `molt deploy --build`).
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// The Dockerfile, relative to DIR (default: DIR/Dockerfile).
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// A build argument (`KEY=VALUE`), repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build the tree of this Git ref (tag, branch, commit) of the
    /// repository in DIR instead of the files as they are.
    #[arg(long, value_name = "REF")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The App the release is for.
    pub name: String,
    /// The source directory (default: the current one).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Build here with the local `docker` and push to Molt's registry (a
    /// push target the server issues), then register the release: the
    /// source never passes through the server.
    #[arg(long)]
    pub external: bool,
    /// With --external: push to this repository of your own instead
    /// (`HOST/REPO`, logged in with `docker login`; the server pulls it
    /// with the credential saved by `molt registries add`).
    #[arg(long, value_name = "HOST/REPO", requires = "external")]
    pub to: Option<String>,
    /// Print the finished build as the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `molt releases NAME` lists; `molt releases promote NAME RELEASE` runs one.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_precedence_over_arg = true
)]
pub struct ReleasesArgs {
    #[command(subcommand)]
    pub command: Option<ReleasesCommand>,
    /// The App whose releases to list, newest first.
    pub name: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Run exactly this release through the health-checked swap (with the
    /// App's environment and settings as they are now).
    Promote {
        name: String,
        release_id: String,
        /// Return once the deploy has started instead of following it.
        #[arg(long)]
        detach: bool,
    },
}

pub async fn build(client: &Client, args: BuildArgs) -> Result<u8> {
    if args.external {
        return super::external::build(client, &args).await;
    }
    let build = run_build(client, &args.name, &args.dir, &args.source, !args.json).await?;
    if args.json {
        // The whole build, its output included, as the API gives it.
        client
            .get(&["apps", &args.name, "builds", &build.id])
            .await?
            .print()?;
    }
    if build.status != "succeeded" {
        return Ok(FAILED);
    }
    if !args.json {
        outln!(
            "Built release {} of {} (build {}, {}). Promote it with: molt releases promote {} {}",
            build.release.as_deref().unwrap_or("-"),
            args.name,
            build.id,
            short_digest(build.digest.as_deref()),
            args.name,
            build.release.as_deref().unwrap_or("-"),
        );
    }
    Ok(OK)
}

/// `molt deploy NAME --build [DIR]`: builds, then promotes the release.
pub async fn deploy_built(
    client: &Client,
    name: &str,
    dir: &Path,
    source: &SourceArgs,
    detach: bool,
) -> Result<u8> {
    let build = run_build(client, name, dir, source, true).await?;
    let Some(release) = build.release.filter(|_| build.status == "succeeded") else {
        return Ok(FAILED);
    };
    eprintln!(
        "Built release {release} (build {}); promoting it…",
        build.id
    );
    promote(client, name, &release, detach).await
}

async fn promote(client: &Client, name: &str, release: &str, detach: bool) -> Result<u8> {
    let answer = client
        .post(
            &["apps", name, "releases", release, "promote"],
            &serde_json::json!({}),
        )
        .await?;
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, detach).await
}

/// Checks the input and packages the source as a tar (a directory honouring
/// `.dockerignore`, or a Git ref's tree): the tar and the Dockerfile's path
/// inside it.
pub(super) async fn package(
    client: &Client,
    app: &str,
    dir: &Path,
    args: &SourceArgs,
) -> Result<(TempPath, String)> {
    for a in &args.build_args {
        if a.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(usage(format!(
                "the build argument `{a}` is not KEY=VALUE: write it as --build-arg {a}=VALUE"
            )));
        }
    }
    if !dir.is_dir() {
        return Err(usage(format!(
            "the source directory {} does not exist (or is not a directory): give the directory that holds the Dockerfile",
            dir.display()
        )));
    }
    let dockerfile = source::dockerfile_in(dir, args.file.as_deref()).map_err(usage)?;
    match &args.git_ref {
        Some(r) => {
            source::check_git_ref(dir, r).map_err(usage)?;
            if !source::git_has_file(dir, r, &dockerfile) {
                return Err(usage(format!(
                    "the Git ref `{r}` has no {dockerfile} in {}: give its path with --file",
                    dir.display()
                )));
            }
        }
        None if !dir.join(&dockerfile).is_file() => {
            return Err(usage(format!(
                "there is no {dockerfile} in {}: add one, or give its path with --file",
                dir.display()
            )));
        }
        None => {}
    }

    // An App that does not exist is refused before the source is packed
    // and sent, which may take a while.
    client.get(&["apps", app]).await?;

    eprintln!("Packaging source…");
    let context = tempfile_path()?;
    let packed = {
        let (dir, dockerfile, path, git_ref) = (
            dir.to_path_buf(),
            dockerfile.clone(),
            context.path.clone(),
            args.git_ref.clone(),
        );
        tokio::task::spawn_blocking(move || match git_ref {
            Some(r) => source::pack_git(&dir, &r, &dockerfile, &path),
            None => source::pack_dir(&dir, &dockerfile, &path).map(|_| ()),
        })
        .await?
    };
    packed?;
    Ok((context, dockerfile))
}

/// Checks the input, packages the source, uploads it, and follows the
/// build to its end (printing its output when `show`): the finished build.
async fn run_build(
    client: &Client,
    name: &str,
    dir: &Path,
    args: &SourceArgs,
    show: bool,
) -> Result<BuildView> {
    let (context, dockerfile) = package(client, name, dir, args).await?;
    let size = std::fs::metadata(&context.path)?.len();
    eprintln!("Uploading source… ({})", human(size));
    let options = BuildOptions {
        dockerfile: Some(dockerfile),
        build_args: args.build_args.clone(),
        git_ref: args.git_ref.clone(),
    };
    let answer = client
        .upload(
            client.url(&["apps", name, "builds"]),
            &context.path,
            &[("x-molt-build", serde_json::to_string(&options)?)],
        )
        .await?;
    drop(context);
    let mut build: BuildView = answer.decode("a build")?;
    eprintln!("Starting build {}…", build.id);
    let mut seen = 0;
    loop {
        if show {
            for line in &build.log {
                outln!("{line}");
            }
        }
        seen += build.log.len();
        if build.status != "building" {
            break;
        }
        tokio::time::sleep(POLL).await;
        let mut url = client.url(&["apps", name, "builds", &build.id]);
        url.query_pairs_mut()
            .append_pair("after", &seen.to_string());
        build = client
            .json(reqwest::Method::GET, url, None)
            .await?
            .decode("a build")?;
    }
    if build.status != "succeeded" {
        eprintln!("Build {} failed; nothing serving changed.", build.id);
        if let Some(step) = &build.failed_step {
            eprintln!("The failing step and its output:\n{step}");
        }
        if let Some(e) = &build.error {
            eprintln!("error: {e}");
        }
    }
    Ok(build)
}

pub async fn releases(client: &Client, args: ReleasesArgs) -> Result<u8> {
    match (args.command, args.name) {
        (
            Some(ReleasesCommand::Promote {
                name,
                release_id,
                detach,
            }),
            _,
        ) => promote(client, &name, &release_id, detach).await,
        (None, Some(name)) => {
            let value = client.get(&["apps", &name, "releases"]).await?;
            if args.json {
                value.print()?;
                return Ok(OK);
            }
            let releases: Vec<ReleaseView> = value.decode("a list of releases")?;
            if releases.is_empty() {
                outln!(
                    "{name} has no releases yet: build one with `molt build {name} DIR` (or `molt deploy {name} --build DIR`)"
                );
                return Ok(OK);
            }
            out!("{}", releases_table(&releases));
            Ok(OK)
        }
        (None, None) => Err(usage(
            "name the App: molt releases NAME, or molt releases promote NAME RELEASE_ID",
        )),
    }
}

/// ID BUILD DIGEST CREATED SERVING, newest first.
pub fn releases_table(releases: &[ReleaseView]) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.build.clone().unwrap_or_else(|| "-".into()),
                short_digest(Some(&r.digest)),
                short_time(&r.created_at),
                if r.serving {
                    "serving".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(&["ID", "BUILD", "DIGEST", "CREATED", "SERVING"], &rows)
}

fn human(bytes: u64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

/// A temporary file removed when dropped.
pub(super) struct TempPath {
    pub(super) path: PathBuf,
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_path() -> Result<TempPath> {
    let name = format!(
        "molt-context-{}-{}.tar",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let path = std::env::temp_dir().join(name);
    std::fs::File::create(&path).context("cannot create a temporary file for the build context")?;
    Ok(TempPath { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_table_marks_the_serving_one() {
        let r = |id: &str, serving: bool| ReleaseView {
            id: id.into(),
            app: "web".into(),
            build: Some(format!("b-{id}")),
            image: "molt.local/web:b".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            created_at: "2025-01-02T10:11:12Z".into(),
            serving,
        };
        let out = releases_table(&[r("r2", false), r("r1", true)]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID  BUILD  DIGEST"), "{out}");
        assert!(
            lines[1].starts_with("r2  b-r2") && !lines[1].contains("serving"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("r1  b-r1") && lines[2].ends_with("serving"),
            "{out}"
        );
    }
}
