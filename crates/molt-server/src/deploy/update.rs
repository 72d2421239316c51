//! `molt apps update`: changing an App's settings. Every change is a
//! `config` deploy of the serving digest that carries the new settings
//! (`DeployRow::settings`); the App takes them only when the deploy's swap
//! is recorded, so a deploy that fails changes nothing. A change of what
//! containers run with (port, health check, resources) starts new ones
//! through the App's strategy; a change of the route only (domains, drain
//! and upstream timeouts), of the strategy or of the replica count alone
//! starts none beyond a scale and moves the route in the cutover at once.
//! An App that never served (its create failed) gets a deploy of its image
//! with the new settings instead: there is no serving digest to keep.

use super::settings::{describe_changes, likely_cause, needs_new_containers, SettingsChange};
use super::*;
use crate::store::AppSettings;
use molt_core::api::UpdateAppRequest;

/// What a settings change will do once started, worked out without
/// starting anything: the review a person sees before saying go.
#[derive(Debug, Clone)]
pub struct SettingsPreview {
    /// The App's settings now.
    pub old: AppSettings,
    /// Its settings if the change succeeds.
    pub new: AppSettings,
    /// One phrase per changed setting, e.g. `port 8080 → 9090`.
    pub changes: Vec<String>,
    pub effect: ChangeEffect,
}

/// How a settings change reaches the App.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEffect {
    /// Only the route or the replica count move: no new containers beyond
    /// a scale, and the route takes the new settings at once.
    RouteOnly,
    /// New containers through the health-checked swap, by this strategy.
    NewContainers(Strategy),
    /// The new settings do not fit beside the serving version: the old
    /// containers stop first (`--yes` is needed unless the App's strategy
    /// is `recreate` anyway).
    RecreateNeedsYes,
}

impl Deployer {
    /// Validates a settings change with the rules of `create_app` and
    /// starts the `config` deploy that brings it. Refused before anything
    /// moves when nothing changes, when the App is busy, and when the new
    /// settings do not fit beside the serving version (a recreate) unless
    /// `req.yes`.
    pub async fn update_app(
        self: &Arc<Self>,
        name: &str,
        req: UpdateAppRequest,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(name)?;
        let preview = self.preview_change(&app, &req, false)?;
        if app.current_deploy.is_none() {
            // Nothing serves yet (its create failed, say on the wrong
            // port): the new settings come with a first deploy of the
            // App's image, as its create would have run it with them.
            let image = app.image.clone();
            return self
                .deploy_image_with(name, &image, req, DeployKind::Config, triggered_by)
                .await;
        }
        if let Some(running) = self.in_progress(&app.name) {
            return Err(DeployError::Conflict {
                message: format!("the App `{}` is busy with deploy {running}; wait for it to finish or cancel it with `molt cancel {}`", app.name, app.name),
                deploy_id: Some(running),
            });
        }
        let SettingsPreview {
            new,
            changes,
            effect,
            ..
        } = preview;
        let serving = self.serving(&app)?;
        let mut plan = Plan {
            replicas: new.replicas,
            ..Plan::new(serving.digest.clone())
        };
        let env = match effect {
            ChangeEffect::RecreateNeedsYes if !req.yes => {
                return Err(DeployError::invalid(
                    "recreate_needs_yes",
                    format!(
                        "the new settings ({}) do not fit on this host beside the serving version, so this change is a recreate: the old container(s) stop before the new ones start, and requests wait (held, not failed) meanwhile. Nothing was changed; run again with --yes to go ahead",
                        changes.join(", ")
                    ),
                ));
            }
            ChangeEffect::RecreateNeedsYes => {
                plan.strategy = Some(Strategy::Recreate);
                self.store.env(&app.name)?
            }
            ChangeEffect::NewContainers(strategy) => {
                plan.strategy = Some(strategy);
                self.store.env(&app.name)?
            }
            ChangeEffect::RouteOnly => {
                // The serving containers stay: a scale at most, and the
                // route takes the new settings in the cutover.
                plan.strategy = Some(Strategy::BlueGreen);
                plan.only = Some(Vec::new());
                serving.env.clone()
            }
        };
        plan.settings = Some(new);
        let (app, deploy) = self
            .begin(
                app,
                DeployKind::Config,
                serving.image.clone(),
                plan,
                env,
                triggered_by,
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!("changing settings: {}", changes.join("; ")),
        );
        Ok((app, deploy))
    }

    /// What `update_app` would do with `req`, refused with the same codes
    /// and messages, without starting anything (the dashboard's review
    /// step). Busy Apps are not refused here: that is checked at the start.
    /// With `with_image`, the change comes with a new image (a failed
    /// deploy tried again with other settings): new containers always, and
    /// no settings change is needed.
    pub fn preview_update(
        &self,
        name: &str,
        req: &UpdateAppRequest,
        with_image: bool,
    ) -> Result<SettingsPreview, DeployError> {
        let app = self.find_app(name)?;
        self.preview_change(&app, req, with_image)
    }

    /// Deploys `image` with the settings `req` changes (an image deploy
    /// that failed, tried again with, say, the port its new version listens
    /// on). The App takes the image and the settings only if it succeeds;
    /// refused as `update_app` is, except that no setting needs to change.
    pub async fn deploy_with_settings(
        self: &Arc<Self>,
        name: &str,
        image: &str,
        req: UpdateAppRequest,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        self.deploy_image_with(name, image, req, DeployKind::Deploy, triggered_by)
            .await
    }

    /// `deploy_with_settings` as a deploy of `kind`: `config` when it is
    /// an App's first version coming with an `apps update`.
    async fn deploy_image_with(
        self: &Arc<Self>,
        name: &str,
        image: &str,
        req: UpdateAppRequest,
        kind: DeployKind,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(name)?;
        let image = ImageRef::parse(image)
            .map_err(|e| DeployError::invalid("invalid_image", e.to_string()))?;
        let SettingsPreview {
            new,
            changes,
            effect,
            ..
        } = self.preview_change(&app, &req, true)?;
        let strategy = match effect {
            ChangeEffect::RecreateNeedsYes if !req.yes => {
                return Err(DeployError::invalid(
                    "recreate_needs_yes",
                    format!(
                        "the new version with these settings ({}) does not fit on this host beside the serving version, so this deploy is a recreate: the old container(s) stop before the new ones start, and requests wait (held, not failed) meanwhile. Nothing was changed; confirm to go ahead",
                        changes.join(", ")
                    ),
                ));
            }
            ChangeEffect::RecreateNeedsYes => Strategy::Recreate,
            ChangeEffect::NewContainers(s) => s,
            ChangeEffect::RouteOnly => Strategy::BlueGreen,
        };
        let plan = Plan {
            replicas: new.replicas,
            strategy: Some(strategy),
            settings: (!changes.is_empty()).then_some(new),
            ..Plan::new(image.digest.clone())
        };
        let env = self.store.env(&app.name)?;
        let (app, deploy) = self
            .begin(app, kind, image.to_string(), plan, env, triggered_by)
            .await?;
        if !changes.is_empty() {
            let _ = self.store.event(
                &deploy.id,
                &format!("with new settings: {}", changes.join("; ")),
            );
        }
        Ok((app, deploy))
    }

    fn preview_change(
        &self,
        app: &AppRow,
        req: &UpdateAppRequest,
        with_image: bool,
    ) -> Result<SettingsPreview, DeployError> {
        let name = &app.name;
        if req.is_empty() && !with_image {
            return Err(DeployError::invalid(
                "nothing_to_change",
                format!("nothing to change: give at least one setting, e.g. `molt apps update {name} --port 8080` (see `molt apps update --help`)"),
            ));
        }
        let old = AppSettings::of(app);
        let mut new = old.clone();
        SettingsChange::of_update(req)?.apply(&mut new)?;
        let own = format!("{}.localhost", app.name);
        for raw in &req.remove_domains {
            let d = molt_core::name::parse_domain(raw)
                .map_err(|e| DeployError::invalid("invalid_domain", e))?;
            if d == own {
                return Err(DeployError::invalid(
                    "invalid_domain",
                    format!(
                        "{own} is always routed to the App `{}` and cannot be removed",
                        app.name
                    ),
                ));
            }
            if !new.domains.contains(&d) {
                return Err(DeployError::invalid(
                    "unknown_domain",
                    format!(
                        "the App `{}` has no domain {d}; its hosts are {}",
                        app.name,
                        app.hosts().join(", ")
                    ),
                ));
            }
            new.domains.retain(|x| *x != d);
        }
        for raw in &req.add_domains {
            if let Some(d) = self.domain_for(&app.name, raw)? {
                if !new.domains.contains(&d) {
                    new.domains.push(d);
                }
            }
        }
        let changes = describe_changes(&old, &new);
        if changes.is_empty() && !with_image {
            return Err(DeployError::invalid(
                "nothing_to_change",
                format!(
                    "nothing to change: the App `{}` already has these settings (see `molt apps show {}`)",
                    app.name, app.name
                ),
            ));
        }
        // Nothing serves yet: the change comes with a first deploy of the
        // App's image (see `update_app`), so new containers.
        let with_image = with_image || app.current_deploy.is_none();
        let serving = app.current_deploy.is_some().then_some(app);
        let target = new.apply_to(app);
        let effect = if with_image || needs_new_containers(&old, &new) {
            let strategy = capacity::choose_change(serving, &target, self.in_use()?, self.capacity)
                .map_err(|e| DeployError::invalid("insufficient_resources", e))?;
            if strategy == Strategy::Recreate && target.strategy != "recreate" {
                ChangeEffect::RecreateNeedsYes
            } else {
                ChangeEffect::NewContainers(strategy)
            }
        } else {
            if new.replicas > old.replicas {
                // Counted from the App as it serves (its replica count now):
                // what each container reserves does not change on this path.
                capacity::fits(app, new.replicas, self.in_use()?, self.capacity)
                    .map_err(|e| DeployError::invalid("insufficient_resources", e))?;
            }
            ChangeEffect::RouteOnly
        };
        Ok(SettingsPreview {
            old,
            new,
            changes,
            effect,
        })
    }

    /// A failed settings change says that nothing changed, and which new
    /// setting most likely caused the failure.
    pub(super) fn explain_settings_failure(&self, deploy: &DeployRow, failure: Failure) -> Failure {
        let Some(new) = &deploy.settings else {
            return failure;
        };
        let Ok(Some(app)) = self.store.get_app(&deploy.app) else {
            return failure;
        };
        let old = AppSettings::of(&app);
        let mut failure = failure;
        let cause = likely_cause(&app.name, &old, new, &failure);
        let kept = if app.current_deploy.is_some() {
            "the App keeps its previous settings and containers"
        } else {
            "the App keeps its previous settings"
        };
        failure.message = format!(
            "{}; the settings change was not applied: {kept}{}",
            failure.message,
            cause.map(|c| format!(". {c}")).unwrap_or_default()
        );
        failure
    }
}
