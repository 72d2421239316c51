//! The routing table: host → App → an immutable set of targets behind an
//! `ArcSwap`. A deploy builds the next set and stores it in one pointer
//! swap, so a request sees either the old set or the new one, never none.
//! Targets that leave a set are retired: they take no new requests and are
//! closed once drained or when their drain timeout passes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use crate::admin::{Paused, Route};
use crate::hold::PauseLimits;
use crate::host;
use crate::metrics::ResponseCounts;
use crate::persist;
use crate::route::limits_of;
pub use crate::route::RouteState;
use crate::target::check_addr;

/// Checks a route from the admin socket and puts its hosts in key form.
pub fn validate(mut route: Route) -> Result<Route, String> {
    if route.app.trim().is_empty() {
        return Err("a route needs an app name".into());
    }
    for raw in &mut route.hosts {
        // A name already in key form is kept as it is, not copied.
        match host::normalize(raw) {
            None => return Err(format!("`{raw}` is not a host name")),
            Some(Cow::Borrowed(_)) => {}
            Some(Cow::Owned(h)) => *raw = h,
        }
    }
    // Few hosts per route: a quadratic dedup that keeps the first of each.
    let mut i = 0;
    while i < route.hosts.len() {
        if route.hosts[..i].contains(&route.hosts[i]) {
            route.hosts.remove(i);
        } else {
            i += 1;
        }
    }
    // Kept for the route's life: no spare room (a parsed list has some).
    route.hosts.shrink_to_fit();
    let mut seen = HashSet::new();
    for t in &route.targets {
        if !seen.insert(t.addr.as_str()) {
            return Err(format!("target `{}` is listed twice", t.addr));
        }
        check_addr(&t.addr)?;
    }
    Ok(route)
}

/// Changes made in memory and not yet on disk, and whether a task is
/// writing them (see `Routes::write_pending`).
#[derive(Default)]
struct Journal {
    pending: Vec<Pending>,
    writing: bool,
}

/// One change waiting for the write that covers it.
struct Pending {
    app: String,
    /// The App's route before the change (`None`: it had none), to put
    /// back if the write fails.
    previous: Option<Route>,
    /// Told once the change is on disk, or why it could not be.
    done: oneshot::Sender<Result<(), String>>,
}

/// All routes, by host for the data path and by App for the admin side.
pub struct Routes {
    by_host: ArcSwap<HashMap<Arc<str>, Arc<RouteState>>>,
    by_app: Mutex<BTreeMap<String, Arc<RouteState>>>,
    /// Serializes changes (in memory) and guards the changes not yet
    /// written.
    changes: tokio::sync::Mutex<Journal>,
    file: PathBuf,
    /// How many times the routes file was written (each write covers every
    /// change made before it began).
    writes: AtomicU64,
    /// Answers for hosts no App claims (404s, 400s).
    pub unrouted: ResponseCounts,
    /// Set once this proxy handed over: the successor's users' address.
    successor: OnceLock<SocketAddr>,
}

impl Routes {
    /// Loads the persisted routes from `file` and serves them at once.
    pub fn load(file: PathBuf) -> anyhow::Result<Self> {
        let persisted = persist::load(&file)?;
        let origin = file.display().to_string();
        Self::with(file, persisted, &[], &origin)
    }

    /// The routes (and pauses) a previous proxy handed over; `file` is where
    /// later changes are persisted. `origin` names where they came from, for
    /// errors.
    pub fn with(
        file: PathBuf,
        routes: Vec<Route>,
        paused: &[Paused],
        origin: &str,
    ) -> anyhow::Result<Self> {
        let table = Routes {
            by_host: ArcSwap::from_pointee(HashMap::new()),
            by_app: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(Journal::default()),
            file,
            writes: AtomicU64::new(0),
            unrouted: ResponseCounts::default(),
            successor: OnceLock::new(),
        };
        for route in routes {
            let route =
                validate(route).map_err(|e| anyhow::anyhow!("{origin}: invalid route: {e}"))?;
            let app = route.app.clone();
            let state = RouteState::new(route).map_err(anyhow::Error::msg)?;
            table.lock_apps().insert(app, state);
        }
        for p in paused {
            // A pause for a route that is gone has nothing to hold.
            let _ = table.pause(&p.app, limits_of(p));
        }
        table.rebuild_hosts();
        Ok(table)
    }

    /// Pauses `app` (see `Request::Pause`); unknown Apps are refused, since
    /// there would be nothing to hold requests for.
    pub fn pause(&self, app: &str, limits: PauseLimits) -> Result<(), String> {
        let route = self
            .app(app)
            .ok_or_else(|| format!("no route for App `{app}` to pause"))?;
        route.hold.pause(limits);
        tracing::info!(%app, max_pause_ms = limits.max_pause_ms, max_queued = limits.max_queued,
            "route paused: holding new requests");
        Ok(())
    }

    /// Resumes `app`; a route that is unknown or not paused is left as is.
    pub fn resume(&self, app: &str) {
        if let Some(route) = self.app(app) {
            let held = route.hold.waiting();
            route.hold.resume();
            tracing::info!(%app, held, "route resumed");
        }
    }

    pub fn successor(&self) -> Option<SocketAddr> {
        self.successor.get().copied()
    }

    /// The paused routes and their limits.
    pub fn paused(&self) -> Vec<Paused> {
        self.all()
            .iter()
            .filter_map(|r| {
                r.hold.limits().map(|l| Paused {
                    app: r.app.clone(),
                    max_pause_ms: l.max_pause_ms,
                    max_queued: l.max_queued,
                })
            })
            .collect()
    }

    /// After a handover: held requests go on to the successor, reached at
    /// `successor` (the users' address both processes share).
    pub fn hand_over(&self, successor: SocketAddr) {
        let _ = self.successor.set(successor);
        for route in self.all() {
            route.hold.hand_over();
        }
    }

    pub fn lookup(&self, host: &str) -> Option<Arc<RouteState>> {
        self.by_host.load().get(host).cloned()
    }

    pub fn app(&self, app: &str) -> Option<Arc<RouteState>> {
        self.lock_apps().get(app).cloned()
    }

    pub fn all(&self) -> Vec<Arc<RouteState>> {
        self.lock_apps().values().cloned().collect()
    }

    pub fn list(&self) -> Vec<Route> {
        self.lock_apps().values().map(|r| r.snapshot()).collect()
    }

    /// Creates or replaces a route. It serves at once and is persisted
    /// before this returns: the write's fsyncs stay off the swap's critical
    /// path, and nothing is acknowledged that a restarted proxy would not
    /// serve. If the write fails, the previous route is put back.
    ///
    /// Changes that come while a write is under way are written together
    /// by the next one: loading many routes at once costs a few rewrites
    /// of the file, not one per route.
    pub async fn set_route(self: &Arc<Self>, route: Route) -> Result<(), String> {
        let route = validate(route)?;
        let written = {
            let mut journal = self.changes.lock().await;
            let hosts = self.by_host.load();
            if let Some((taken, other)) = route.hosts.iter().find_map(|h| {
                hosts
                    .get(h.as_str())
                    .filter(|other| other.app != route.app)
                    .map(|other| (h, other))
            }) {
                return Err(format!(
                    "host `{taken}` is already routed to App `{}`",
                    other.app
                ));
            }
            let existing = self.app(&route.app);
            let previous = existing.as_ref().map(|state| state.snapshot());
            let state = match existing {
                Some(state) => {
                    state.apply(&route)?;
                    state
                }
                None => {
                    let state = RouteState::new(route.clone())?;
                    self.lock_apps()
                        .insert(route.app.clone(), Arc::clone(&state));
                    state
                }
            };
            let old_hosts = previous.as_ref().map_or(&[][..], |p| &p.hosts[..]);
            self.rehost(&route.app, old_hosts, Some(&state));
            self.journal(&mut journal, &route.app, previous)
        };
        written.await?;
        tracing::info!(app = %route.app, hosts = ?route.hosts,
            targets = ?route.targets.iter().map(|t| &t.addr).collect::<Vec<_>>(), "route set");
        Ok(())
    }

    /// Removes a route; its targets drain. Removing an unknown App is ok.
    /// If the write fails, the route is put back (with fresh targets: the
    /// old ones drain).
    pub async fn remove_route(self: &Arc<Self>, app: &str) -> Result<(), String> {
        let written = {
            let mut journal = self.changes.lock().await;
            let Some(state) = self.lock_apps().remove(app) else {
                return Ok(());
            };
            let previous = state.snapshot();
            self.rehost(app, &previous.hosts, None);
            state.retire_all();
            // Its held requests learn there is nothing to wait for (503).
            state.hold.resume();
            self.journal(&mut journal, app, Some(previous))
        };
        written.await?;
        tracing::info!(%app, "route removed");
        Ok(())
    }

    /// Records a change made in memory and makes sure a task is writing;
    /// the answer comes once the change is on disk.
    fn journal(
        self: &Arc<Self>,
        journal: &mut Journal,
        app: &str,
        previous: Option<Route>,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let (done, written) = oneshot::channel();
        journal.pending.push(Pending {
            app: app.to_string(),
            previous,
            done,
        });
        if !journal.writing {
            journal.writing = true;
            tokio::spawn(Arc::clone(self).write_pending());
        }
        async move {
            written.await.unwrap_or_else(|_| {
                Err("the routes file was not written: the proxy is stopping".into())
            })
        }
    }

    /// Writes the routes as they are now, for every change made so far,
    /// until no change waits. A task of its own: a caller that goes away
    /// does not leave the others waiting. If a write fails, every change
    /// not yet on disk is undone (newest first) and told why.
    async fn write_pending(self: Arc<Self>) {
        loop {
            let (routes, batch) = {
                let mut journal = self.changes.lock().await;
                if journal.pending.is_empty() {
                    journal.writing = false;
                    // The snapshots and their JSON are freed now (several
                    // MiB with thousands of routes): see `memory`.
                    tokio::task::spawn_blocking(crate::memory::give_back);
                    return;
                }
                (self.list(), std::mem::take(&mut journal.pending))
            };
            let saved = persist::save(&self.file, routes).await;
            self.writes.fetch_add(1, Ordering::Relaxed);
            match saved {
                Ok(()) => {
                    for change in batch {
                        let _ = change.done.send(Ok(()));
                    }
                }
                Err(e) => {
                    let why = format!("could not save {}: {e}", self.file.display());
                    tracing::error!(error = %why, changes = batch.len(), "routes not saved; changes undone");
                    let mut journal = self.changes.lock().await;
                    // Changes made since the snapshot build on those that
                    // failed: they go too.
                    let later = std::mem::take(&mut journal.pending);
                    for change in later.iter().rev().chain(batch.iter().rev()) {
                        self.put_back(&change.app, change.previous.clone());
                    }
                    for change in batch.into_iter().chain(later) {
                        let _ = change.done.send(Err(why.clone()));
                    }
                }
            }
        }
    }

    /// Undoes a change whose write failed: `previous` is the App's route as
    /// it was, `None` when it had none (its new targets drain).
    fn put_back(&self, app: &str, previous: Option<Route>) {
        let current = self.app(app);
        let old_hosts = current
            .as_ref()
            .map(|state| state.settings().hosts.clone())
            .unwrap_or_default();
        let restored = match (previous, current) {
            (Some(previous), Some(state)) => {
                // Applying a route that was valid a moment ago cannot fail;
                // if it somehow did, the new route keeps serving.
                if let Err(e) = state.apply(&previous) {
                    tracing::error!(%app, error = %e, "could not put the previous route back");
                }
                Some(state)
            }
            (Some(previous), None) => match RouteState::new(previous) {
                Ok(state) => {
                    self.lock_apps().insert(app.to_string(), Arc::clone(&state));
                    Some(state)
                }
                Err(e) => {
                    tracing::error!(%app, error = %e, "could not put the previous route back");
                    None
                }
            },
            (None, Some(_)) => {
                if let Some(state) = self.lock_apps().remove(app) {
                    state.retire_all();
                    state.hold.resume();
                }
                None
            }
            (None, None) => None,
        };
        self.rehost(app, &old_hosts, restored.as_ref());
    }

    /// How many times the routes file was written.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Shutdown: cut every target's remaining work.
    pub fn close_all(&self) {
        for route in self.all() {
            route.close_all();
        }
    }

    /// Builds every host's entry anew (at start).
    fn rebuild_hosts(&self) {
        let all = self.all();
        // Sized once: growing step by step would leave the smaller tables
        // behind as free heap.
        let mut map = HashMap::with_capacity(all.iter().map(|r| r.settings().hosts.len()).sum());
        for route in all {
            for h in &route.settings().hosts {
                map.insert(Arc::from(h.as_str()), Arc::clone(&route));
            }
        }
        self.by_host.store(Arc::new(map));
    }

    /// Moves `app`'s entries from `old_hosts` to `state`'s hosts (none when
    /// the route went away). The map is copied, not rebuilt: keys are
    /// shared strings, so a change costs a copy of pointers, not of every
    /// host name.
    fn rehost(&self, app: &str, old_hosts: &[String], state: Option<&Arc<RouteState>>) {
        let mut map = HashMap::clone(&self.by_host.load());
        for h in old_hosts {
            if map.get(h.as_str()).is_some_and(|owner| owner.app == app) {
                map.remove(h.as_str());
            }
        }
        if let Some(state) = state {
            for h in &state.settings().hosts {
                map.insert(Arc::from(h.as_str()), Arc::clone(state));
            }
        }
        self.by_host.store(Arc::new(map));
    }

    fn lock_apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<RouteState>>> {
        self.by_app.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Target;

    fn route(app: &str, addr: &str) -> Route {
        Route {
            app: app.into(),
            hosts: vec![format!("{app}.test")],
            targets: vec![Target {
                addr: addr.into(),
                id: addr.into(),
            }],
            upstream_timeout_ms: 0,
            drain_timeout_ms: 1_000,
            tunnel_idle_timeout_ms: None,
            max_body_bytes: None,
            https_redirect: None,
            hsts_max_age_secs: None,
            console: false,
        }
    }

    fn targets(routes: &Routes, host: &str) -> Option<Vec<String>> {
        routes
            .lookup(host)
            .map(|r| r.snapshot().targets.into_iter().map(|t| t.addr).collect())
    }

    #[tokio::test]
    async fn a_route_that_cannot_be_saved_is_put_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The routes file's dir does not exist: every save fails.
        let file = dir.path().join("gone").join("routes.json");
        let routes = Arc::new(
            Routes::with(file, vec![route("web", "10.0.0.1:80")], &[], "test").expect("routes"),
        );

        let err = routes
            .set_route(route("web", "10.0.0.2:80"))
            .await
            .expect_err("save must fail");
        assert!(err.contains("could not save"), "{err}");
        assert_eq!(
            targets(&routes, "web.test"),
            Some(vec!["10.0.0.1:80".to_string()])
        );

        routes
            .set_route(route("api", "10.0.0.3:80"))
            .await
            .expect_err("save must fail");
        assert_eq!(targets(&routes, "api.test"), None);
        assert!(routes.app("api").is_none());
    }

    #[tokio::test]
    async fn a_saved_route_serves_and_is_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("routes.json");
        let routes = Arc::new(Routes::load(file.clone()).expect("routes"));
        routes
            .set_route(route("web", "10.0.0.2:80"))
            .await
            .expect("set");
        assert_eq!(
            targets(&routes, "web.test"),
            Some(vec!["10.0.0.2:80".to_string()])
        );
        let reloaded = Routes::load(file).expect("reload");
        assert_eq!(
            targets(&reloaded, "web.test"),
            Some(vec!["10.0.0.2:80".to_string()])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_share_writes_and_all_reach_the_file() {
        const N: usize = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("routes.json");
        let routes = Arc::new(Routes::load(file.clone()).expect("routes"));
        let mut setting = tokio::task::JoinSet::new();
        for i in 0..N {
            let routes = Arc::clone(&routes);
            setting.spawn(async move {
                routes
                    .set_route(route(
                        &format!("app{i}"),
                        &format!("10.0.{}.{}:80", i / 250, i % 250),
                    ))
                    .await
            });
        }
        // Removals and replacements in the same stream of changes.
        for i in 0..10 {
            let routes = Arc::clone(&routes);
            setting.spawn(async move {
                routes.remove_route(&format!("gone{i}")).await?;
                routes
                    .set_route(route(&format!("gone{i}"), "10.1.0.1:80"))
                    .await?;
                routes.remove_route(&format!("gone{i}")).await
            });
        }
        while let Some(done) = setting.join_next().await {
            done.expect("join").expect("each change is acknowledged");
        }
        let writes = routes.writes();
        assert!(
            writes < N as u64 / 2,
            "{writes} writes for {N} routes: changes were not written together"
        );
        // What was acknowledged is in the file, and the file is whole.
        let on_disk = persist::load(&file).expect("a valid routes file");
        assert_eq!(on_disk.len(), N);
        assert_eq!(on_disk, routes.list());
        let reloaded = Routes::load(file).expect("reload");
        for i in [0, N / 2, N - 1] {
            let host = format!("app{i}.test");
            assert_eq!(targets(&reloaded, &host), targets(&routes, &host));
        }
        assert!(reloaded.app("gone0").is_none());
        let leftovers = std::fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_that_cannot_be_saved_are_all_undone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gone").join("routes.json");
        let routes = Arc::new(
            Routes::with(file, vec![route("web", "10.0.0.1:80")], &[], "test").expect("routes"),
        );
        let mut setting = tokio::task::JoinSet::new();
        for i in 0..50 {
            let routes = Arc::clone(&routes);
            setting.spawn(async move {
                let app = if i % 5 == 0 {
                    "web".to_string()
                } else {
                    format!("app{i}")
                };
                routes
                    .set_route(route(&app, &format!("10.0.1.{i}:80")))
                    .await
            });
        }
        while let Some(done) = setting.join_next().await {
            let err = done.expect("join").expect_err("no save can succeed");
            assert!(err.contains("could not save"), "{err}");
        }
        assert_eq!(routes.list(), vec![route("web", "10.0.0.1:80")]);
        assert_eq!(
            targets(&routes, "web.test"),
            Some(vec!["10.0.0.1:80".to_string()])
        );
        assert_eq!(targets(&routes, "app1.test"), None);
    }
}
