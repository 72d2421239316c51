//! The one place where traffic moves. Every change of an App's route made by
//! a deploy goes through [`Deployer::route_to`] (a step that can still be
//! undone) or [`Deployer::cut_over`] (the swap that a deploy records). The
//! rule: until the proxy acknowledged a cutover, a failure leaves the old set
//! serving; once it acknowledged, the deploy only moves forward. A failure
//! to record it is retried, and if the database still refuses, the cutover
//! is kept in memory and healed (recorded, finished, the old set retired)
//! by [`Deployer::heal_cutover`], which every converge calls first. Nothing
//! that now serves is ever torn down because a record failed.
//!
//! A settings change moves the route's hosts and timeouts only in the swap:
//! the undoable steps route the deploy's containers under the App's
//! settings as stored, so a change that fails or is canceled never routes
//! the new settings' domains, not even for a moment.

use super::*;

/// How often, and after how long, a refused record is tried again before
/// the cutover is left for healing.
const RECORD_RETRIES: [u64; 4] = [50, 150, 400, 1000];

/// A cutover the proxy took and the database did not record yet.
#[derive(Clone)]
pub(super) struct Unrecorded {
    pub(super) deploy_id: String,
    /// What the App follows once recorded (see `followed_image`).
    pub(super) image: String,
    /// The swap's timeline line.
    pub(super) message: String,
    /// How the deploy's end reads once recorded.
    pub(super) summary: String,
    /// The containers that left the route and go once it is recorded.
    pub(super) retire: Vec<ReplicaRow>,
}

/// Why a cutover did not complete.
pub(super) enum CutoverError {
    /// The proxy refused: nothing moved, the caller rolls back.
    Refused(Failure),
    /// Traffic moved, the record did not: the caller tears nothing down.
    Unrecorded(Failure),
}

impl Deployer {
    /// Points the App's route at `rows` (those in rotation), a step a
    /// deploy can still undo: a refusal is a `proxy_refused` failure.
    /// The hosts and timeouts are the App's as stored (see the module's
    /// doc), whatever settings `app` carries.
    pub(super) async fn route_to<'a>(
        &self,
        app: &AppRow,
        rows: impl IntoIterator<Item = &'a ReplicaRow>,
    ) -> Result<(), StepError> {
        let stored = self.store.get_app(&app.name)?;
        self.set_route(stored.as_ref().unwrap_or(app), rows).await
    }

    async fn set_route<'a>(
        &self,
        app: &AppRow,
        rows: impl IntoIterator<Item = &'a ReplicaRow>,
    ) -> Result<(), StepError> {
        self.proxy
            .set_route(route_for(app, self.targets(rows)))
            .await
            .map_err(|e| {
                StepError::of(
                    FailureKind::ProxyRefused,
                    format!("the proxy did not take the new route: {e:#}"),
                )
            })
    }

    /// Whether `app` (with a deploy's settings) routes other hosts or
    /// timeouts than the App as stored.
    fn route_moves(&self, app: &AppRow) -> anyhow::Result<bool> {
        Ok(self.store.get_app(&app.name)?.is_some_and(|s| {
            s.hosts() != app.hosts()
                || s.upstream_timeout_secs != app.upstream_timeout_secs
                || s.drain_timeout_secs != app.drain_timeout_secs
                || s.https_redirect != app.https_redirect
                || s.hsts_max_age_secs != app.hsts_max_age_secs
                || s.max_body_bytes != app.max_body_bytes
                || s.tunnel_idle_timeout_secs != app.tunnel_idle_timeout_secs
        }))
    }

    /// The swap: the route gets the deploy's whole set `set` (already
    /// applied by the caller when `routed`, under the stored settings) with
    /// the deploy's hosts and timeouts, then the database records the
    /// deploy as the App's serving one. A refused record is retried; if it
    /// still fails the cutover waits in memory for `heal_cutover`.
    pub(super) async fn cut_over<'a>(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        set: impl IntoIterator<Item = &'a ReplicaRow>,
        routed: bool,
        pending: Unrecorded,
    ) -> Result<(), CutoverError> {
        let moves = self
            .route_moves(app)
            .map_err(|e| CutoverError::Refused(Failure::internal(format!("{e:#}"))))?;
        if !routed || moves {
            self.set_route(app, set)
                .await
                .map_err(|StepError(f)| CutoverError::Refused(f))?;
        }
        // Progress as data: a server that dies from here on reads that the
        // whole set took the traffic, and finishes the deploy forward.
        if let Err(e) = self.store.mark_routed(&deploy.id) {
            tracing::warn!(deploy = %deploy.id, "cannot record the replicas as routed: {e:#}");
        }
        let mut result = self.record(&pending);
        for wait in RECORD_RETRIES {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(wait)).await;
            result = self.record(&pending);
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let failure = Failure::internal(format!(
                    "traffic moved to deploy {} but recording it failed ({e:#}); the new version serves, and the record is retried",
                    deploy.id
                ));
                self.unrecorded().insert(app.name.clone(), pending);
                Err(CutoverError::Unrecorded(failure))
            }
        }
    }

    fn record(&self, pending: &Unrecorded) -> anyhow::Result<()> {
        let deploy = self
            .store
            .get_deploy(&pending.deploy_id)?
            .ok_or_else(|| anyhow::anyhow!("the deploy {} is gone", pending.deploy_id))?;
        self.store
            .record_swap(&deploy.id, &deploy.app, &pending.image, &pending.message)
    }

    pub(super) fn unrecorded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Unrecorded>> {
        self.unrecorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an App has a cutover the database has not recorded yet.
    pub fn has_unrecorded_cutover(&self, app: &str) -> bool {
        self.unrecorded().contains_key(app)
    }

    /// Records an App's cutover that the database refused earlier, finishes
    /// its deploy and retires the containers that left the route. Returns
    /// whether the App has no unrecorded cutover left, which is when its
    /// store may be trusted to converge from.
    pub async fn heal_cutover(&self, app: &str) -> bool {
        let Some(pending) = self.unrecorded().get(app).cloned() else {
            return true;
        };
        if let Err(e) = self.record(&pending) {
            tracing::warn!(app, deploy = %pending.deploy_id, "the cutover is still not recorded: {e:#}");
            return false;
        }
        self.unrecorded().remove(app);
        if self.in_progress(app).is_none() {
            self.release_domains(app);
        }
        let _ = self.store.event(
            &pending.deploy_id,
            "the cutover was recorded after the database refused it at first",
        );
        if let Ok(Some(row)) = self.store.get_app(app) {
            self.retire(&row, &pending.retire, &pending.deploy_id).await;
        }
        if let Err(e) = self.store.finish_deploy(
            &pending.deploy_id,
            DeployStatus::Succeeded,
            None,
            &pending.summary,
        ) {
            tracing::error!(
                app,
                "cannot record the end of deploy {}: {e:#}",
                pending.deploy_id
            );
        }
        true
    }
}

/// The proxy route of an App with the given targets.
pub fn route_for(app: &AppRow, targets: Vec<Target>) -> Route {
    Route {
        app: app.name.clone(),
        hosts: app.hosts(),
        targets,
        upstream_timeout_ms: app.upstream_timeout_secs * 1000,
        drain_timeout_ms: app.drain_timeout_secs * 1000,
        tunnel_idle_timeout_ms: app.tunnel_idle_timeout_secs.map(|s| s * 1000),
        max_body_bytes: app.max_body_bytes,
        https_redirect: (!app.https_redirect).then_some(false),
        hsts_max_age_secs: app.hsts_max_age_secs,
        console: false,
    }
}

/// What a deploy makes the App follow: a rollback, restart, config change or
/// scale keeps following the App's reference; other kinds make the deployed
/// reference the App's.
pub(crate) fn followed_image(deploy: &DeployRow, app: &AppRow) -> String {
    match deploy.kind {
        DeployKind::Rollback | DeployKind::Restart | DeployKind::Config | DeployKind::Scale => {
            app.image.clone()
        }
        _ => deploy.image.clone(),
    }
}
