//! Running a deploy to its end: choosing the strategy's path, tearing down
//! what a failed or canceled deploy started, and recording the outcome.

use super::*;

/// How a deploy ended, before it is recorded.
pub(super) enum Outcome {
    Succeeded(String),
    Canceled,
    Failed(Failure),
    /// The proxy took the new set but the database would not record it:
    /// the new set serves, nothing is torn down, and the cutover is healed
    /// (recorded and finished) by `heal_cutover` once the database answers.
    Unrecorded(Failure),
}

impl Deployer {
    pub(super) fn spawn(
        self: &Arc<Self>,
        deploy: DeployRow,
        plan: Plan,
        cancel: CancellationToken,
    ) {
        let deployer = Arc::clone(self);
        tokio::spawn(async move {
            let app = deploy.app.clone();
            deployer.run(deploy, plan, cancel).await;
            deployer.release(&app);
        });
    }

    /// Runs a deploy to its end and records the outcome. Cancellation is
    /// honoured until the swap (a rolling deploy: until its last replica
    /// moved, and it brings the old ones back); after it the deploy only
    /// moves forward.
    pub(super) async fn run(&self, deploy: DeployRow, plan: Plan, cancel: CancellationToken) {
        let started = Instant::now();
        let mut new_containers: Vec<String> = Vec::new();
        let outcome = match plan.strategy {
            Some(Strategy::Recreate) if !plan.hard => {
                self.recreate(&deploy, &plan, &cancel, &mut new_containers)
                    .await
            }
            Some(Strategy::Rolling) if !plan.hard => {
                self.rolling(&deploy, &plan, &cancel, &mut new_containers)
                    .await
            }
            _ if plan.hard => match self.restart_in_place(&deploy, &cancel).await {
                Ok(Some(ready)) => self.commit(&deploy, &plan, ready).await,
                Ok(None) => Outcome::Canceled,
                Err(StepError(e)) => Outcome::Failed(e),
            },
            _ => {
                let prepared = tokio::select! {
                    r = self.prepare(&deploy, &plan, &mut new_containers) => r.map(Some),
                    _ = cancel.cancelled() => Ok(None),
                };
                match prepared {
                    Ok(Some(ready)) => self.commit(&deploy, &plan, ready).await,
                    Ok(None) => Outcome::Canceled,
                    Err(StepError(e)) => Outcome::Failed(e),
                }
            }
        };
        let interrupted = self
            .interruptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&deploy.id);
        let outcome = match (outcome, interrupted) {
            (Outcome::Canceled, Some(reason)) => Outcome::Failed(Failure::new(
                FailureKind::Interrupted,
                if self.serves(&deploy.app) {
                    format!(
                        "{reason}; the new container(s) were removed and the previous version serves"
                    )
                } else {
                    format!("{reason}; the new container(s) were removed")
                },
            )),
            (outcome, _) => outcome,
        };
        // A crash's output (and a failing check's answer) is recorded below:
        // never with the App's secret values in it.
        let outcome = match outcome {
            Outcome::Failed(failure) => Outcome::Failed(
                self.explain_settings_failure(&deploy, self.mask_failure(&deploy, failure)),
            ),
            outcome => outcome,
        };
        let label = match &outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Canceled => "canceled",
            Outcome::Failed(_) => "failed",
            Outcome::Unrecorded(_) => "unrecorded",
        };
        self.metrics
            .deploy_finished(&deploy.app, deploy.kind.as_str(), label, started.elapsed());
        if deploy.triggered_by == "autoheal" && label == "succeeded" {
            self.metrics.autoheal_replaced(&deploy.app);
        }
        // Before the end is recorded (and the App released), so that a client
        // that sees the end can deploy again at once: tear down what a
        // stopped deploy started, point the route at whatever serves now and
        // remove leftovers.
        if matches!(outcome, Outcome::Failed(_) | Outcome::Canceled) {
            self.tear_down(&deploy, &new_containers).await;
        }
        // A cutover the database has not recorded yet must not be undone by
        // converging from the old record.
        if self.heal_cutover(&deploy.app).await {
            crate::watch::settle_claimed(self, &deploy.app).await;
        }
        let result = match outcome {
            Outcome::Succeeded(summary) => {
                if plan.restore_env {
                    if let Err(e) = self.store.replace_env(&deploy.app, &deploy.env) {
                        tracing::error!(
                            "cannot restore the environment of the rollback target: {e:#}"
                        );
                    } else {
                        let _ = self.store.event(
                            &deploy.id,
                            "restored the environment of the rollback target",
                        );
                    }
                }
                self.store
                    .finish_deploy(&deploy.id, DeployStatus::Succeeded, None, &summary)
            }
            Outcome::Canceled => self.store.finish_deploy(
                &deploy.id,
                DeployStatus::Canceled,
                Some(&Failure::new(
                    FailureKind::Canceled,
                    if self.serves(&deploy.app) {
                        "canceled before traffic moved; the previous version kept serving"
                    } else {
                        "canceled before traffic moved; nothing served before it, and nothing serves now"
                    },
                )),
                "deploy canceled",
            ),
            Outcome::Failed(failure) => {
                tracing::warn!(app = %deploy.app, deploy = %deploy.id, kind = %failure.kind, "deploy failed: {failure}");
                self.store.finish_deploy(
                    &deploy.id,
                    DeployStatus::Failed,
                    Some(&failure),
                    &format!("deploy failed: {failure}"),
                )
            }
            Outcome::Unrecorded(failure) => {
                // The deploy stays `swapping`: `heal_cutover` (or the
                // start-up reconciler) finishes it forward.
                tracing::error!(app = %deploy.app, deploy = %deploy.id, "{failure}");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(deploy = %deploy.id, "cannot record the end of the deploy: {e:#}");
        }
    }
}
