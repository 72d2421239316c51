//! `molt apps update`: changing an App's settings. Every change is a
//! `config` deploy of the serving digest that carries the new settings
//! (`DeployRow::settings`); the App takes them only when the deploy's swap
//! is recorded, so a deploy that fails changes nothing. A change of what
//! containers run with (port, health check, resources) starts new ones
//! through the App's strategy; a change of the route only (domains, drain
//! and upstream timeouts), of the strategy or of the replica count alone
//! starts none beyond a scale and moves the route in the cutover at once.

use super::settings::{describe_changes, likely_cause, needs_new_containers, SettingsChange};
use super::*;
use crate::store::AppSettings;
use molt_core::api::UpdateAppRequest;

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
        if req.is_empty() {
            return Err(DeployError::invalid(
                "nothing_to_change",
                format!("nothing to change: give at least one setting, e.g. `molt apps update {name} --port 8080` (see `molt apps update --help`)"),
            ));
        }
        let old = AppSettings::of(&app);
        let mut new = old.clone();
        SettingsChange::of_update(&req)?.apply(&mut new)?;
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
        if changes.is_empty() {
            return Err(DeployError::invalid(
                "nothing_to_change",
                format!(
                    "nothing to change: the App `{}` already has these settings (see `molt apps show {}`)",
                    app.name, app.name
                ),
            ));
        }
        if let Some(running) = self.in_progress(&app.name) {
            return Err(DeployError::Conflict {
                message: format!("the App `{}` is busy with deploy {running}; wait for it to finish or cancel it with `molt cancel {}`", app.name, app.name),
                deploy_id: Some(running),
            });
        }
        let serving = self.serving(&app)?;
        let target = new.apply_to(&app);
        let mut plan = Plan {
            replicas: new.replicas,
            ..Plan::new(serving.digest.clone())
        };
        let env = if needs_new_containers(&old, &new) {
            let strategy =
                capacity::choose_change(Some(&app), &target, self.in_use()?, self.capacity)
                    .map_err(|e| DeployError::invalid("insufficient_resources", e))?;
            if strategy == Strategy::Recreate && target.strategy != "recreate" && !req.yes {
                return Err(DeployError::invalid(
                    "recreate_needs_yes",
                    format!(
                        "the new settings ({}) do not fit on this host beside the serving version, so this change is a recreate: the old container(s) stop before the new ones start, and requests wait (held, not failed) meanwhile. Nothing was changed; run again with --yes to go ahead",
                        changes.join(", ")
                    ),
                ));
            }
            plan.strategy = Some(strategy);
            self.store.env(&app.name)?
        } else {
            // The serving containers stay: a scale at most, and the route
            // takes the new settings in the cutover.
            if new.replicas > old.replicas {
                capacity::fits(&target, new.replicas, self.in_use()?, self.capacity)
                    .map_err(|e| DeployError::invalid("insufficient_resources", e))?;
            }
            plan.strategy = Some(Strategy::BlueGreen);
            plan.only = Some(Vec::new());
            serving.env.clone()
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
        failure.message = format!(
            "{}; the settings change was not applied: the App keeps its previous settings and containers{}",
            failure.message,
            cause.map(|c| format!(". {c}")).unwrap_or_default()
        );
        failure
    }
}
