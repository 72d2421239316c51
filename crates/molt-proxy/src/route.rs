//! One App's route: its target set (swapped whole), the settings requests
//! read, the targets retired from it until they drain, and its hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::admin::{
    Paused, Route, Target, DEFAULT_MAX_BODY_BYTES, DEFAULT_TUNNEL_IDLE_MS, MAX_TIMEOUT_MS,
};
use crate::hold::{Hold, PauseLimits};
use crate::metrics::ResponseCounts;
use crate::target::{IdleWait, InFlightGuard, TargetState};

/// An immutable target set; the cursor only breaks ties between equally
/// loaded targets (round robin).
pub struct TargetSet {
    targets: Vec<Arc<TargetState>>,
    cursor: AtomicUsize,
}

impl TargetSet {
    pub(crate) fn new(mut targets: Vec<Arc<TargetState>>) -> Self {
        // Kept until the next deploy: no spare room (a list collected in
        // place of the parsed targets would keep theirs).
        targets.shrink_to_fit();
        TargetSet {
            targets,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The target with the least outstanding work, ties going round robin;
    /// `None` if every target is skipped. With one target, that one (no
    /// count read, no turn taken).
    fn least_loaded(
        &self,
        skipped: impl Fn(&Arc<TargetState>) -> bool,
    ) -> Option<&Arc<TargetState>> {
        let n = self.targets.len();
        if n == 1 {
            return self.targets.first().filter(|t| !skipped(t));
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut best: Option<(usize, &Arc<TargetState>)> = None;
        for i in 0..n {
            let t = &self.targets[(start + i) % n];
            if skipped(t) {
                continue;
            }
            let load = t.in_flight();
            if best.is_none_or(|(least, _)| load < least) {
                best = Some((load, t));
            }
        }
        best.map(|(_, t)| t)
    }

    /// Targets ordered from least to most outstanding work, starting the
    /// scan at a rotating offset so ties go round robin.
    fn by_load(&self) -> Vec<&Arc<TargetState>> {
        let n = self.targets.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<(usize, &Arc<TargetState>)> = (0..n)
            .map(|i| {
                let t = &self.targets[(start + i) % n];
                (t.in_flight(), t)
            })
            .collect();
        // Stable sort keeps the rotation among equals.
        order.sort_by_key(|(load, _)| *load);
        order.into_iter().map(|(_, t)| t).collect()
    }
}

/// The settings a request reads (see `RouteSettings`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body: u64,
    pub upstream_timeout: u64,
    pub tunnel_idle: Duration,
    /// `Strict-Transport-Security`'s max-age for answers over HTTPS.
    pub hsts_max_age_secs: Option<u64>,
    /// The route is Molt's console: Molt's cookies pass.
    pub console: bool,
}

/// What a route says beyond its targets.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub hosts: Vec<String>,
    /// As the route gave them (listed back unchanged); the request path
    /// uses the clamped values below.
    pub upstream_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub tunnel_idle_timeout_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub https_redirect: Option<bool>,
    pub hsts_max_age_secs: Option<u64>,
    pub console: bool,
    /// `upstream_timeout_ms` within `MAX_TIMEOUT_MS` (0 stays unbounded).
    pub upstream_timeout: u64,
    /// `drain_timeout_ms` within `MAX_TIMEOUT_MS`.
    pub drain_timeout: Duration,
    /// Within [1 s, `MAX_TIMEOUT_MS`], default `DEFAULT_TUNNEL_IDLE_MS`.
    pub tunnel_idle: Duration,
    /// Default `DEFAULT_MAX_BODY_BYTES`.
    pub max_body: u64,
}

struct Retired {
    target: Arc<TargetState>,
    epoch: u64,
}

/// How an attempt to end a retirement went.
enum Finish {
    /// Not (or no longer) retired under that epoch: someone else handled it.
    NotRetired,
    /// Work came back in through a stale set; wait again.
    Busy,
    /// Closed and forgotten; how many requests/connections were cut.
    Closed(u64),
}

pub struct RouteState {
    pub app: String,
    settings: ArcSwap<RouteSettings>,
    active: ArcSwap<TargetSet>,
    retired: Mutex<Vec<Retired>>,
    pub counts: ResponseCounts,
    /// Pause state and the requests it holds (in memory only).
    pub hold: Hold,
}

impl RouteState {
    /// Takes the route's strings over rather than copying them: at start,
    /// with thousands of routes, copies would leave the parsed file's
    /// strings behind as holes in the heap.
    pub(crate) fn new(mut route: Route) -> Result<Arc<Self>, String> {
        let targets = std::mem::take(&mut route.targets)
            .into_iter()
            .map(TargetState::new)
            .collect::<Result<Vec<_>, _>>()?;
        let settings = RouteSettings {
            hosts: std::mem::take(&mut route.hosts),
            ..settings_of(&route)
        };
        Ok(Arc::new(RouteState {
            app: route.app,
            settings: ArcSwap::from_pointee(settings),
            active: ArcSwap::from_pointee(TargetSet::new(targets)),
            retired: Mutex::new(Vec::new()),
            counts: ResponseCounts::default(),
            hold: Hold::default(),
        }))
    }

    pub fn settings(&self) -> Arc<RouteSettings> {
        self.settings.load_full()
    }

    /// What a request needs of the settings, copied out: no reference
    /// count taken on every request (a cache line every worker would
    /// write).
    pub fn request_limits(&self) -> RequestLimits {
        let settings = self.settings.load();
        RequestLimits {
            max_body: settings.max_body,
            upstream_timeout: settings.upstream_timeout,
            tunnel_idle: settings.tunnel_idle,
            hsts_max_age_secs: settings.hsts_max_age_secs,
            console: settings.console,
        }
    }

    /// Whether plain HTTP to this App goes to HTTPS when it can.
    pub fn redirects_to_https(&self) -> bool {
        self.settings.load().https_redirect.unwrap_or(true)
    }

    /// Picks the least loaded live target and counts the request on it.
    /// `None` means the route has no target to send to (503).
    pub fn acquire(&self) -> Option<InFlightGuard> {
        self.acquire_except(None)
    }

    /// Like `acquire`, but never `refused`: for sending a request again
    /// after that target refused the connection. `None` when no other
    /// target can take it.
    pub fn acquire_other(&self, refused: &TargetState) -> Option<InFlightGuard> {
        self.acquire_except(Some(refused))
    }

    fn acquire_except(&self, skip: Option<&TargetState>) -> Option<InFlightGuard> {
        // A set loaded just before a swap may hold a target that drained and
        // closed meanwhile; acquiring fails on those, and a fresh load sees
        // the new set. Bounded: a swap storm cannot keep us here.
        for _ in 0..4 {
            let set = self.active.load();
            if set.targets.is_empty() {
                return None;
            }
            let skipped =
                |t: &Arc<TargetState>| skip.is_some_and(|s| std::ptr::eq(Arc::as_ptr(t), s));
            // The common case allocates nothing: the least loaded target
            // takes it. Only if that one closed meanwhile are the rest
            // tried, in order.
            let picked = set
                .least_loaded(skipped)
                .and_then(|t| t.try_acquire())
                .or_else(|| {
                    set.by_load()
                        .into_iter()
                        .filter(|t| !skipped(t))
                        .find_map(|t| t.try_acquire())
                });
            if picked.is_some() {
                return picked;
            }
        }
        None
    }

    /// The route as the admin protocol describes it.
    pub fn snapshot(&self) -> Route {
        let settings = self.settings.load();
        Route {
            app: self.app.clone(),
            hosts: settings.hosts.clone(),
            targets: self
                .active
                .load()
                .targets
                .iter()
                .map(|t| t.target.clone())
                .collect(),
            upstream_timeout_ms: settings.upstream_timeout_ms,
            drain_timeout_ms: settings.drain_timeout_ms,
            tunnel_idle_timeout_ms: settings.tunnel_idle_timeout_ms,
            max_body_bytes: settings.max_body_bytes,
            https_redirect: settings.https_redirect,
            hsts_max_age_secs: settings.hsts_max_age_secs,
            console: settings.console,
        }
    }

    /// Everything in flight on this App, active and retired targets alike.
    pub fn in_flight(&self) -> usize {
        let active: usize = self
            .active
            .load()
            .targets
            .iter()
            .map(|t| t.in_flight())
            .sum();
        let retired: usize = self
            .lock_retired()
            .iter()
            .map(|r| r.target.in_flight())
            .sum();
        active + retired
    }

    /// Installs `route`'s settings and target set. Targets that stay keep
    /// their state (pool, counters); targets that come back from retirement
    /// are put back in service; targets that leave are retired.
    pub(crate) fn apply(self: &Arc<Self>, route: &Route) -> Result<(), String> {
        // Build what may fail before touching anything.
        let current = self.active.load_full();
        let mut fresh: HashMap<&Target, Arc<TargetState>> = HashMap::new();
        for t in &route.targets {
            if !current.targets.iter().any(|s| s.target == *t) {
                fresh.insert(t, TargetState::new(t.clone())?);
            }
        }

        let mut retired = self.lock_retired();
        let mut next = Vec::with_capacity(route.targets.len());
        for t in &route.targets {
            if let Some(kept) = current.targets.iter().find(|s| s.target == *t) {
                next.push(Arc::clone(kept));
            } else if let Some(pos) = retired
                .iter()
                .position(|r| r.target.target == *t && !r.target.is_closed())
            {
                let back = retired.swap_remove(pos).target;
                back.bump_epoch();
                next.push(back);
            } else if let Some(new) = fresh.remove(t) {
                next.push(new);
            }
        }
        self.settings.store(Arc::new(settings_of(route)));
        self.active.store(Arc::new(TargetSet::new(next.clone())));

        for old in &current.targets {
            if !next.iter().any(|n| Arc::ptr_eq(n, old)) {
                self.retire(&mut retired, Arc::clone(old));
            }
        }
        Ok(())
    }

    /// Retires every target: the route is going away.
    pub(crate) fn retire_all(self: &Arc<Self>) {
        let mut retired = self.lock_retired();
        let current = self.active.swap(Arc::new(TargetSet::new(Vec::new())));
        for old in &current.targets {
            self.retire(&mut retired, Arc::clone(old));
        }
    }

    fn retire(self: &Arc<Self>, retired: &mut Vec<Retired>, target: Arc<TargetState>) {
        let epoch = target.bump_epoch();
        retired.push(Retired {
            target: Arc::clone(&target),
            epoch,
        });
        let timeout = self.settings.load().drain_timeout;
        let deadline = Instant::now() + timeout;
        tracing::info!(app = %self.app, addr = %target.target.addr, id = %target.target.id,
            ?timeout, "target retired, draining");
        let route = Arc::clone(self);
        // The background half of a retirement: close the target when idle,
        // or cut what is left at the deadline.
        tokio::spawn(async move {
            route.settle(&target, epoch, deadline).await;
        });
    }

    /// Waits for a retired target to go idle or for `deadline`, then closes
    /// it. Returns how many requests/connections were cut, `None` when it
    /// drained (or stopped being retired) on its own.
    async fn settle(&self, target: &TargetState, epoch: u64, deadline: Instant) -> Option<u64> {
        // Each Busy means a request slipped in through a stale set and must
        // finish; the deadline bounds the loop.
        loop {
            match target.wait_idle(epoch, deadline).await {
                IdleWait::Superseded => return None,
                IdleWait::Idle => match self.finish(target, epoch, false) {
                    Finish::Busy => continue,
                    Finish::NotRetired | Finish::Closed(_) => return None,
                },
                IdleWait::TimedOut => {
                    return match self.finish(target, epoch, true) {
                        Finish::Closed(cut) => Some(cut),
                        Finish::NotRetired | Finish::Busy => None,
                    };
                }
            }
        }
    }

    fn finish(&self, target: &TargetState, epoch: u64, force: bool) -> Finish {
        let mut retired = self.lock_retired();
        let Some(pos) = retired
            .iter()
            .position(|r| std::ptr::eq(Arc::as_ptr(&r.target), target) && r.epoch == epoch)
        else {
            return Finish::NotRetired;
        };
        let cut = if force {
            target.force_close()
        } else if target.close_if_idle() {
            0
        } else {
            return Finish::Busy;
        };
        retired.swap_remove(pos);
        let addr = &target.target.addr;
        if cut > 0 {
            tracing::warn!(app = %self.app, %addr, cut, "drain timeout passed, closed what remained");
        } else {
            tracing::info!(app = %self.app, %addr, "target drained and closed");
        }
        Finish::Closed(cut)
    }

    /// Waits for the retired target(s) at `addr` to drain, closing what
    /// remains after `timeout`. Returns (drained, cut). An address that is
    /// not retired counts as drained.
    pub async fn wait_drained(&self, addr: &str, timeout: Duration) -> (bool, u64) {
        let waiting: Vec<(Arc<TargetState>, u64)> = self
            .lock_retired()
            .iter()
            .filter(|r| r.target.target.addr == addr)
            .map(|r| (Arc::clone(&r.target), r.epoch))
            .collect();
        // Clamped: a huge timeout from the admin socket must not overflow.
        let deadline = Instant::now() + timeout.min(Duration::from_millis(MAX_TIMEOUT_MS));
        let mut cut_total = 0;
        let mut drained = true;
        for (target, epoch) in waiting {
            // The background half of the retirement may have cut it at the
            // same deadline: its count is kept on the target.
            let cut = match self.settle(&target, epoch, deadline).await {
                Some(cut) => cut,
                None => target.cut_on_close(),
            };
            if cut > 0 {
                drained = false;
                cut_total += cut;
            }
        }
        (drained, cut_total)
    }

    /// Shutdown: cut everything, active and retired.
    pub fn close_all(&self) {
        for t in self.active.load().targets.iter() {
            t.force_close();
        }
        for r in self.lock_retired().drain(..) {
            r.target.force_close();
        }
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, Vec<Retired>> {
        self.retired.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn limits_of(p: &Paused) -> PauseLimits {
    PauseLimits {
        max_pause_ms: p.max_pause_ms,
        max_queued: p.max_queued,
    }
}

pub(crate) fn settings_of(route: &Route) -> RouteSettings {
    RouteSettings {
        hosts: route.hosts.clone(),
        upstream_timeout_ms: route.upstream_timeout_ms,
        drain_timeout_ms: route.drain_timeout_ms,
        tunnel_idle_timeout_ms: route.tunnel_idle_timeout_ms,
        max_body_bytes: route.max_body_bytes,
        https_redirect: route.https_redirect,
        hsts_max_age_secs: route.hsts_max_age_secs,
        console: route.console,
        upstream_timeout: route.upstream_timeout_ms.min(MAX_TIMEOUT_MS),
        drain_timeout: Duration::from_millis(route.drain_timeout_ms.min(MAX_TIMEOUT_MS)),
        tunnel_idle: Duration::from_millis(
            route
                .tunnel_idle_timeout_ms
                .unwrap_or(DEFAULT_TUNNEL_IDLE_MS)
                .clamp(1_000, MAX_TIMEOUT_MS),
        ),
        max_body: route.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
    }
}
