//! Recreate: for a host that cannot hold the old and the new version at
//! once.

use super::*;

impl Deployer {
    /// A recreate, for a host that cannot hold the old and the new version
    /// at once: pull first; phase 1 holds the App's requests, drains and stops
    /// the old containers (kept); phase 2 starts the new ones and, once they
    /// are healthy, points the route at them and releases the held requests.
    /// If a new one fails or the deploy is canceled, the old ones are started
    /// again and the requests flow to them.
    pub(super) async fn recreate(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        cancel: &CancellationToken,
        new_containers: &mut Vec<String>,
    ) -> Outcome {
        let (app, old, old_rows, (run_ref, digest)) = match self.setup(deploy, plan, cancel).await {
            Ok(v) => v,
            Err(outcome) => return outcome,
        };
        if old_rows.is_empty() {
            return Outcome::Failed(Failure::internal(
                "the serving deploy has no container to replace",
            ));
        }
        // Phase 1: stop the old deployment while requests wait.
        if let Err(StepError(failure)) = self.stop_old(deploy, &app, &old_rows).await {
            self.restore_old(deploy, &app, &old.id, &old_rows).await;
            return Outcome::Failed(failure.context("stopping the old deployment failed"));
        }

        // Phase 2: deploy the new one.
        let phase2 = async {
            let names: Vec<String> = (0..plan.replicas)
                .map(|i| container_name(&app.name, &deploy.id, i))
                .collect();
            self.store.set_deploy_phase(&deploy.id, 2)?;
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!(
                    "phase 2 of 2: deploying the new one: starting {} {}",
                    if names.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    },
                    names.join(", ")
                ),
            )?;
            let mut fresh = Vec::new();
            for i in 0..plan.replicas {
                fresh.push(
                    self.start_replica(deploy, &app, &run_ref, i, new_containers)
                        .await?,
                );
            }
            self.check_all(deploy, &app, &mut fresh).await?;
            Ok::<_, StepError>(fresh)
        };
        let started = tokio::select! {
            r = phase2 => r.map(Some),
            _ = cancel.cancelled() => Ok(None),
        };
        let fresh = match started {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.tear_down(deploy, new_containers).await;
                new_containers.clear();
                self.restore_old(deploy, &app, &old.id, &old_rows).await;
                return Outcome::Canceled;
            }
            Err(StepError(e)) => {
                self.tear_down(deploy, new_containers).await;
                new_containers.clear();
                self.restore_old(deploy, &app, &old.id, &old_rows).await;
                return Outcome::Failed(e);
            }
        };

        // Swap and release the held requests to the new version.
        let swapped = async {
            self.store.advance(
                &deploy.id,
                DeployStatus::Swapping,
                &format!(
                    "pointing the route at the new {} and releasing held requests",
                    if fresh.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    }
                ),
            )?;
            self.route_to(&app, &fresh).await?;
            self.proxy.resume(&app.name).await.map_err(|e| {
                StepError::of(
                    FailureKind::ProxyRefused,
                    format!("the proxy did not release the held requests: {e:#}"),
                )
            })?;
            Ok::<(), StepError>(())
        };
        if let Err(StepError(failure)) = swapped.await {
            self.tear_down(deploy, new_containers).await;
            new_containers.clear();
            self.restore_old(deploy, &app, &old.id, &old_rows).await;
            return Outcome::Failed(failure);
        }
        let summary = format!(
            "deploy succeeded (recreate): {} serves {}{}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name,
            on_replicas(plan.replicas)
        );
        let pending = Unrecorded {
            deploy_id: deploy.id.clone(),
            image: followed_image(deploy, &app),
            message: format!("traffic switched to {}", describe_containers(&fresh)),
            summary: summary.clone(),
            retire: old_rows.clone(),
        };
        // Records the swap, and moves the route to the new hosts and
        // timeouts of a settings change; refused, the old set comes back.
        match self.cut_over(deploy, &app, &fresh, true, pending).await {
            Ok(()) => new_containers.clear(),
            Err(CutoverError::Refused(f)) => {
                // The new containers serve until the old ones are back.
                self.restore_old(deploy, &app, &old.id, &old_rows).await;
                self.tear_down(deploy, new_containers).await;
                new_containers.clear();
                return Outcome::Failed(f);
            }
            Err(CutoverError::Unrecorded(f)) => {
                new_containers.clear();
                return Outcome::Unrecorded(f);
            }
        }
        self.remove_stopped(deploy, &old_rows).await;
        Outcome::Succeeded(summary)
    }

    /// Phase 1 of a recreate: the App's requests are held, the route is
    /// emptied so the old containers drain, and they are stopped (kept, so
    /// a failed phase 2 can start them again).
    async fn stop_old(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        old: &[ReplicaRow],
    ) -> Result<(), StepError> {
        let one = old.len() == 1;
        let held_for =
            Duration::from_secs(app.health.deploy_timeout_secs + app.drain_timeout_secs + 60);
        self.store.set_deploy_phase(&deploy.id, 1)?;
        self.store.event(&deploy.id, "phase 1 of 2: stopping the old deployment (the host cannot hold both versions; new requests are held)")?;
        self.proxy.pause(&app.name, held_for, 10_000).await?;
        self.route_to(app, []).await?;
        let drains = old.iter().filter_map(|r| r.addr.as_deref()).map(|addr| {
            self.proxy
                .wait_drained(&app.name, addr, Duration::from_secs(app.drain_timeout_secs))
        });
        let mut closed = 0;
        for drained in join_all(drains).await {
            closed += drained?.1;
        }
        let noun = if one { "container" } else { "containers" };
        self.store.event(
            &deploy.id,
            &if closed == 0 {
                format!("the old {noun} drained")
            } else {
                format!("drain timeout reached: closed {closed} connection(s) on the old {noun}")
            },
        )?;
        for row in old {
            self.runtime
                .stop(&row.container_id, STOP_TIMEOUT_SECS)
                .await?;
        }
        self.store.event(
            &deploy.id,
            &format!(
                "stopped the old {noun} {} (kept until the new {} healthy)",
                list_short(old),
                if one { "one is" } else { "ones are" }
            ),
        )?;
        Ok(())
    }

    /// After a failed recreate: starts the old containers again, points the
    /// route back at them and releases the held requests.
    pub(super) async fn restore_old(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        serving_id: &str,
        old_rows: &[ReplicaRow],
    ) {
        let mut back = Vec::new();
        let mut errors = Vec::new();
        for row in old_rows {
            match self.bring_back(deploy, app, row).await {
                Ok(addr) => {
                    let _ = self.store.set_replica_addr(serving_id, row.replica, &addr);
                    back.push(ReplicaRow {
                        addr: Some(addr),
                        ..row.clone()
                    });
                }
                Err(StepError(e)) => errors.push(format!(
                    "could not bring the old container {} back: {e}",
                    short(&row.container_id)
                )),
            }
        }
        let routed = if back.is_empty() {
            Ok(())
        } else {
            self.route_to(app, &back)
                .await
                .map_err(|StepError(f)| anyhow::anyhow!(f))
        };
        let resumed = self.proxy.resume(&app.name).await;
        if let Err(e) = routed.and(resumed.map(|_| ())) {
            errors.push(format!(
                "could not point the route back at the old containers: {e:#}"
            ));
        }
        if !back.is_empty() {
            let _ = self.store.event(
                &deploy.id,
                &format!(
                    "started the old {} {} again; {} the held requests",
                    if back.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    },
                    list_short(&back),
                    if back.len() == 1 {
                        "it serves"
                    } else {
                        "they serve"
                    }
                ),
            );
        }
        for e in errors {
            let _ = self.store.event(&deploy.id, &e);
        }
    }
}
