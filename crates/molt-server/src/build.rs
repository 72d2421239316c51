//! Builds from source (`molt build`): the context arrives as a tar stream
//! and goes to a file under `DATA_DIR/builds` (never whole in memory),
//! counted against the size limit as it comes; the engine builds it; a
//! build that succeeds makes a release (the image on this host, with the
//! App's settings and environment as they are now), which serves only once
//! promoted. A failed build changes nothing and keeps the failing step with
//! its output.

use crate::deploy::Deployer;
use crate::runtime::BuildSpec;
use crate::store::{now, AppSettings, BuildRow, ReleaseRow};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use molt_core::api::{BuildOptions, BuildView, ReleaseView};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Releases whose images stay on the host per App unless `molt server
/// --keep-releases` says otherwise (the serving one and the rollback
/// targets stay regardless).
pub const DEFAULT_KEEP_RELEASES: usize = 10;

/// The largest context a build accepts unless `molt server
/// --build-context-limit` says otherwise: 1 GiB.
pub const DEFAULT_CONTEXT_LIMIT: u64 = 1 << 30;

/// The registry part of every built image's tag: never pulled from nor
/// pushed to, it marks an image that exists only on this host.
pub const BUILT_REGISTRY: &str = "molt.local";

/// Why a build was not started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The context is larger than the limit (HTTP 413).
    #[error("the build context is larger than this server's limit of {}: leave files out with a .dockerignore, or raise the limit with `molt server --build-context-limit SIZE`", crate::capacity::human_bytes(*limit))]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// How much of a refused upload is read and dropped, and for how long,
/// before the connection is let go: enough for a context somewhat over the
/// limit, not a way to make the server read without end.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the rest of a refused upload (within `DRAIN_BYTES` and
/// `DRAIN_TIME`) and drops it.
async fn drain<E>(body: &mut (impl Stream<Item = Result<Bytes, E>> + Unpin)) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen: u64 = 0;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The builds of this server: where contexts go, the size limit, and the
/// output of the builds running now (kept in the store when they end).
pub struct Builds {
    deployer: Arc<Deployer>,
    dir: PathBuf,
    limit: u64,
    /// Built releases kept per App (see [`Builds::prune`]).
    keep_releases: usize,
    running: Mutex<HashMap<String, Arc<LiveLog>>>,
}

/// The output of a build that runs now, and a signal for those who follow
/// it (the API's event stream): each new line, and the end (the sender
/// goes with the build).
#[derive(Default)]
struct LiveLog {
    lines: Mutex<Vec<String>>,
    changed: tokio::sync::watch::Sender<()>,
}

impl Builds {
    /// Builds that a stopped server left running are failed (their builder
    /// went with it) and their contexts removed.
    pub fn new(
        deployer: Arc<Deployer>,
        data_dir: &std::path::Path,
        limit: u64,
        keep_releases: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let dir = data_dir.join("builds");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for mut b in deployer.store.unfinished_builds()? {
            b.status = "failed".into();
            b.error = Some("the server stopped during this build: run `molt build` again".into());
            b.finished_at = Some(now());
            deployer.store.finish_build(&b, None)?;
        }
        Ok(Arc::new(Self {
            deployer,
            dir,
            limit,
            keep_releases: keep_releases.max(1),
            running: Mutex::default(),
        }))
    }

    /// Checks the options, receives the context (refused past the limit),
    /// records the build and starts it; returns at once with the build. A
    /// refused upload is read on (within bounds) and dropped, so a client
    /// still sending gets the answer that says why, not a reset connection.
    pub async fn start<E: std::fmt::Display>(
        self: &Arc<Self>,
        app: &str,
        opts: BuildOptions,
        declared_len: Option<u64>,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<BuildRow, BuildError> {
        let started = self
            .receive_and_start(app, opts, declared_len, &mut body)
            .await;
        if started.is_err() {
            drain(&mut body).await;
        }
        started
    }

    async fn receive_and_start<E: std::fmt::Display>(
        self: &Arc<Self>,
        app: &str,
        opts: BuildOptions,
        declared_len: Option<u64>,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<BuildRow, BuildError> {
        let store = &self.deployer.store;
        let app_row = store.get_app(app)?.ok_or_else(|| {
            BuildError::NotFound(format!(
                "no App named `{app}`: create it first with `molt apps create {app} --image IMAGE --port PORT`"
            ))
        })?;
        let build_args = parse_build_args(&opts.build_args)?;
        let dockerfile = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        if dockerfile.is_empty()
            || dockerfile.starts_with('/')
            || dockerfile.split('/').any(|p| p == "..")
        {
            return Err(BuildError::Invalid {
                code: "invalid_dockerfile",
                message: format!("the Dockerfile path `{dockerfile}` must be relative to the context and stay inside it"),
            });
        }
        if declared_len.is_some_and(|n| n > self.limit) {
            return Err(BuildError::TooLarge { limit: self.limit });
        }
        let id = crate::datadir::random_hex(5);
        let context = self.dir.join(format!("{id}.tar"));
        if let Err(e) = self.receive(&context, body).await {
            let _ = tokio::fs::remove_file(&context).await;
            return Err(e);
        }
        let build = BuildRow {
            id: id.clone(),
            app: app_row.name.clone(),
            status: "building".into(),
            source: opts
                .git_ref
                .as_ref()
                .map_or_else(|| "directory".to_string(), |r| format!("git {r}")),
            dockerfile: dockerfile.clone(),
            image: format!("{BUILT_REGISTRY}/{}:{id}", app_row.name),
            digest: None,
            release: None,
            error: None,
            failed_step: None,
            log: Vec::new(),
            created_at: now(),
            finished_at: None,
        };
        store.insert_build(&build)?;
        let log = Arc::new(LiveLog::default());
        self.running
            .lock()
            .unwrap()
            .insert(id.clone(), Arc::clone(&log));
        let spec = BuildSpec {
            context,
            dockerfile,
            build_args,
            tag: build.image.clone(),
            labels: HashMap::from([
                (crate::runtime::LABEL_APP.to_string(), app_row.name.clone()),
                ("molt.build".to_string(), id.clone()),
            ]),
        };
        let this = Arc::clone(self);
        let started = build.clone();
        tokio::spawn(async move { this.run(started, spec, log).await });
        Ok(build)
    }

    /// Writes the context to `path`, counting it against the limit.
    async fn receive<E: std::fmt::Display>(
        &self,
        path: &std::path::Path,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<(), BuildError> {
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(anyhow::Error::from)?;
        let mut total: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BuildError::Invalid {
                code: "upload_failed",
                message: format!(
                    "the upload of the build context broke off: {e}; run `molt build` again"
                ),
            })?;
            total += chunk.len() as u64;
            if total > self.limit {
                return Err(BuildError::TooLarge { limit: self.limit });
            }
            file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
        }
        if total == 0 {
            return Err(BuildError::Invalid {
                code: "empty_context",
                message: "the build context is empty: send a tar of the source directory (`molt build NAME DIR` does)".into(),
            });
        }
        file.flush().await.map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// Runs one build to its end and records it (with its release when it
    /// succeeded); the context file goes either way.
    async fn run(self: Arc<Self>, mut build: BuildRow, spec: BuildSpec, log: Arc<LiveLog>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let collect = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    let mut lines = log.lines.lock().unwrap();
                    if lines.len() < MAX_LOG_LINES {
                        lines.push(line);
                    }
                    drop(lines);
                    log.changed.send_replace(());
                }
            })
        };
        let context = spec.context.clone();
        let result = self.deployer.runtime.build_image(spec, tx).await;
        let _ = collect.await;
        let _ = tokio::fs::remove_file(&context).await;
        build.log = log.lines.lock().unwrap().clone();
        build.finished_at = Some(now());
        let store = &self.deployer.store;
        let release = match result {
            Ok(image_id) => {
                build.status = "succeeded".into();
                build.digest = Some(image_id.clone());
                let app = store.get_app(&build.app).ok().flatten();
                match app {
                    Some(app) => {
                        let release = ReleaseRow {
                            id: crate::datadir::random_hex(5),
                            app: app.name.clone(),
                            build: Some(build.id.clone()),
                            image: build.image.clone(),
                            digest: image_id,
                            settings: AppSettings::of(&app),
                            env: store.env(&app.name).unwrap_or_default(),
                            created_at: now(),
                        };
                        build.release = Some(release.id.clone());
                        Some(release)
                    }
                    None => {
                        build.status = "failed".into();
                        build.error = Some("the App was deleted during the build".into());
                        None
                    }
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                build.status = "failed".into();
                build.failed_step = failed_step(&build.log, &error);
                build.error = Some(format!("the build failed: {error}"));
                None
            }
        };
        if let Err(e) = store.finish_build(&build, release.as_ref()) {
            tracing::error!(build = %build.id, error = %e, "recording the end of a build failed");
        }
        self.running.lock().unwrap().remove(&build.id);
        tracing::info!(build = %build.id, app = %build.app, status = %build.status, "build ended");
        if release.is_some() {
            if let Err(e) = self.prune(&build.app).await {
                tracing::warn!(app = %build.app, error = %format!("{e:#}"), "pruning old releases failed");
            }
        }
    }

    /// Retention: removes the images of an App's built releases beyond the
    /// newest `keep_releases`, except the serving one and every one a
    /// succeeded deploy in the history ran (the rollback targets). Each
    /// removal is logged; an image the engine will not remove (a container
    /// uses it) stays with its release.
    pub async fn prune(&self, app: &str) -> anyhow::Result<usize> {
        let store = &self.deployer.store;
        let protected: std::collections::HashSet<String> = store
            .list_deploys(app)?
            .into_iter()
            .filter(|d| d.status == molt_core::DeployStatus::Succeeded)
            .filter_map(|d| d.digest)
            .collect();
        let releases = store.list_releases(app)?;
        let mut pruned = 0;
        for r in prunable(&releases, self.keep_releases, &protected) {
            match self.remove_release_image(r).await {
                Ok(()) => {
                    store.delete_release(&r.id)?;
                    pruned += 1;
                    tracing::info!(app, release = %r.id, image = %r.image, digest = %r.digest, "pruned a release: its image was removed from this host (and from Molt's registry when it was there)");
                }
                Err(e) => {
                    tracing::warn!(app, release = %r.id, image = %r.image, error = %format!("{e:#}"), "kept a release beyond the retention: its image could not be removed");
                }
            }
        }
        Ok(pruned)
    }

    /// Removes a release's image from this host: a built one by its tag, a
    /// registered one (an external build) by its digest, and from Molt's
    /// registry too when it was pushed there.
    async fn remove_release_image(&self, r: &ReleaseRow) -> anyhow::Result<()> {
        if r.build.is_some() {
            return self.deployer.runtime.remove_image(&r.image).await;
        }
        let image = molt_core::ImageRef::parse(&r.image)?;
        self.deployer
            .runtime
            .remove_image(&image.with_digest(&r.digest).to_string())
            .await?;
        if let Some(hosted) = self.deployer.hosted_registry() {
            if let Some(repository) = hosted.repository_of(&image) {
                hosted.delete_manifest(repository, &r.digest).await?;
            }
        }
        Ok(())
    }

    /// A build as clients see it, with its output from line `after` on
    /// (live while it runs).
    pub fn view(&self, app: &str, id: &str, after: usize) -> Result<BuildView, BuildError> {
        let build = self
            .deployer
            .store
            .get_build(id)?
            .filter(|b| b.app == app)
            .ok_or_else(|| {
                BuildError::NotFound(format!(
                    "the App `{app}` has no build `{}`",
                    id.chars().take(40).collect::<String>()
                ))
            })?;
        let live = self.running.lock().unwrap().get(id).cloned();
        let lines = match live {
            Some(log) if build.status == "building" => log.lines.lock().unwrap().clone(),
            _ => build.log.clone(),
        };
        Ok(BuildView {
            id: build.id,
            app: build.app,
            status: build.status,
            source: build.source,
            dockerfile: build.dockerfile,
            image: build.image,
            digest: build.digest,
            release: build.release,
            error: build.error,
            failed_step: build.failed_step,
            log_lines: lines.len(),
            log: lines.into_iter().skip(after).collect(),
            created_at: build.created_at,
            finished_at: build.finished_at,
        })
    }

    /// A signal for each new line of a running build and its end (the
    /// channel closes); `None` when it does not run here now.
    pub fn follow(&self, id: &str) -> Option<tokio::sync::watch::Receiver<()>> {
        let running = self.running.lock().unwrap();
        running.get(id).map(|l| l.changed.subscribe())
    }

    /// An App's releases, newest first, marking the one it serves.
    pub fn releases(&self, app: &str) -> Result<Vec<ReleaseView>, BuildError> {
        let store = &self.deployer.store;
        let app = store.get_app(app)?.ok_or_else(|| {
            BuildError::NotFound(format!("no App named `{app}`: see `molt apps list`"))
        })?;
        let serving = match &app.current_deploy {
            Some(id) => store.get_deploy(id)?.and_then(|d| d.release),
            None => None,
        };
        Ok(store
            .list_releases(&app.name)?
            .into_iter()
            .map(|r| {
                let serving = serving.as_deref() == Some(r.id.as_str());
                release_view(r, serving)
            })
            .collect())
    }
}

/// A release as clients see it.
pub fn release_view(r: ReleaseRow, serving: bool) -> ReleaseView {
    ReleaseView {
        serving,
        id: r.id,
        app: r.app,
        build: r.build,
        image: r.image,
        digest: r.digest,
        created_at: r.created_at,
    }
}

/// The releases (newest first) retention removes: those beyond the newest
/// `keep` whose digest no succeeded deploy ran (`protected`: the serving
/// one and the rollback targets).
pub fn prunable<'a>(
    releases: &'a [ReleaseRow],
    keep: usize,
    protected: &std::collections::HashSet<String>,
) -> Vec<&'a ReleaseRow> {
    releases
        .iter()
        .skip(keep)
        .filter(|r| !protected.contains(&r.digest))
        .collect()
}

/// The builder's output kept per build.
const MAX_LOG_LINES: usize = 20_000;

/// `KEY=VALUE` build arguments, refused when one has no `=`.
pub fn parse_build_args(raw: &[String]) -> Result<HashMap<String, String>, BuildError> {
    let mut out = HashMap::new();
    for a in raw {
        let Some((k, v)) = a.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(BuildError::Invalid {
                code: "invalid_build_arg",
                message: format!(
                    "the build argument `{a}` is not KEY=VALUE: write it as --build-arg {a}=VALUE"
                ),
            });
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The step of the classic builder's output that failed (its `Step N/M :`
/// line), with the output it printed and the builder's error.
pub fn failed_step(log: &[String], error: &str) -> Option<String> {
    let start = log.iter().rposition(|l| l.starts_with("Step "))?;
    let mut out: Vec<&str> = log[start..]
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim_start().starts_with("--->"))
        .collect();
    out.push(error);
    Some(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_need_an_equals_sign() {
        let ok = parse_build_args(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(ok["A"], "1");
        assert_eq!(ok["B"], "x=y");
        assert_eq!(ok["C"], "");
        for bad in ["NOEQUALS", "=v"] {
            let e = parse_build_args(&[bad.into()]).unwrap_err();
            assert!(
                matches!(&e, BuildError::Invalid { code: "invalid_build_arg", message } if message.contains(bad)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_failed_step_is_the_last_one_with_its_output() {
        let log: Vec<String> = [
            "Step 1/3 : FROM base",
            " ---> 1234",
            "Step 2/3 : RUN make",
            " ---> Running in abcd",
            "make: *** no rule",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            failed_step(&log, "returned a non-zero code: 2").unwrap(),
            "Step 2/3 : RUN make\nmake: *** no rule\nreturned a non-zero code: 2"
        );
        assert_eq!(failed_step(&[], "x"), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_what_deploys_ran() {
        let r = |id: &str| ReleaseRow {
            id: id.into(),
            app: "web".into(),
            build: None,
            image: format!("molt.local/web:{id}"),
            digest: format!("sha256:{id}"),
            settings: AppSettings::of(&crate::store::AppRow::named("web")),
            env: Vec::new(),
            created_at: now(),
        };
        let releases = vec![r("r5"), r("r4"), r("r3"), r("r2"), r("r1")];
        let protected = ["sha256:r4".to_string(), "sha256:r1".to_string()].into();
        let ids: Vec<&str> = prunable(&releases, 2, &protected)
            .into_iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["r3", "r2"]);
        assert!(prunable(&releases, 5, &Default::default()).is_empty());
    }

    #[test]
    fn too_large_says_the_limit_and_what_to_do() {
        let e = BuildError::TooLarge { limit: 1 << 30 };
        let m = e.to_string();
        assert!(m.contains("1 GiB") && m.contains(".dockerignore"), "{m}");
    }
}
