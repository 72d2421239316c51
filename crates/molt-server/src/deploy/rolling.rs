//! Rolling: one replica at a time, and back the same way on failure.

use super::*;

impl Deployer {
    /// A rolling deploy: for each replica, a new container starts beside the
    /// serving set, is health-checked, and takes the old one's place in the
    /// route in one swap; the old one drains and is stopped (kept until the
    /// deploy ends). The route never holds fewer than the App's replicas.
    /// On failure or cancel the replaced old containers start again and take
    /// their places back, one at a time, and the new ones go.
    pub(super) async fn rolling(
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
        let plan_layout = layout(&old_rows, plan.replicas, plan.only.as_deref());
        if let Err(e) = self.adopt_kept(deploy, &plan_layout.keep) {
            return Outcome::Failed(Failure::internal(e.to_string()));
        }
        // What the route holds, by replica.
        let mut set: BTreeMap<u32, ReplicaRow> =
            old_rows.iter().map(|r| (r.replica, r.clone())).collect();
        // Replicas moved so far: the old container (stopped, kept for a
        // roll-back) and its replacement.
        let mut moved: Vec<(Option<ReplicaRow>, ReplicaRow)> = Vec::new();
        let total = plan_layout.start.len();
        for (step, &index) in plan_layout.start.iter().enumerate() {
            let who = format!("replica {index}: ");
            let start =
                self.start_one(deploy, &app, &run_ref, (step, total, index), new_containers);
            let started = if cancel.is_cancelled() {
                Ok(None)
            } else {
                tokio::select! {
                    r = start => r.map(Some),
                    _ = cancel.cancelled() => Ok(None),
                }
            };
            let fresh = match started {
                Ok(Some(row)) => row,
                Ok(None) => {
                    self.roll_back(deploy, &app, &old.id, &mut set, moved, "canceled")
                        .await;
                    return Outcome::Canceled;
                }
                Err(StepError(e)) => {
                    let why = format!("replica {index} failed");
                    self.roll_back(deploy, &app, &old.id, &mut set, moved, &why)
                        .await;
                    return Outcome::Failed(e);
                }
            };
            if step == 0 {
                let _ = self.store.advance(
                    &deploy.id,
                    DeployStatus::Swapping,
                    "moving traffic one replica at a time",
                );
            }
            let previous = set.insert(index, fresh.clone());
            if let Err(StepError(failure)) = self.route_to(&app, set.values()).await {
                match &previous {
                    Some(p) => set.insert(index, p.clone()),
                    None => set.remove(&index),
                };
                self.roll_back(deploy, &app, &old.id, &mut set, moved, &failure.message)
                    .await;
                return Outcome::Failed(failure);
            }
            let _ = self
                .store
                .set_replica_role(&deploy.id, index, ReplicaRole::Routed);
            let _ = self.store.event(
                &deploy.id,
                &format!(
                    "{who}traffic moved to the new container {}",
                    short(&fresh.container_id)
                ),
            );
            if let Some(old_row) = &previous {
                self.set_aside(deploy, &app, old_row, &who).await;
            }
            moved.push((previous, fresh));
        }
        // Replicas beyond the count, if it shrank: out of the route too.
        let extra: Vec<ReplicaRow> = plan_layout
            .retire
            .iter()
            .filter(|r| r.replica >= plan.replicas)
            .cloned()
            .collect();
        if !extra.is_empty() {
            for r in &extra {
                set.remove(&r.replica);
            }
            if let Err(StepError(failure)) = self.route_to(&app, set.values()).await {
                for r in &extra {
                    set.insert(r.replica, r.clone());
                }
                self.roll_back(deploy, &app, &old.id, &mut set, moved, &failure.message)
                    .await;
                return Outcome::Failed(failure);
            }
        }
        let fresh: Vec<ReplicaRow> = moved.iter().map(|(_, f)| f.clone()).collect();
        let summary = format!(
            "deploy succeeded (rolling): {} serves {}{}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name,
            on_replicas(plan.replicas)
        );
        let retired: Vec<ReplicaRow> = moved
            .iter()
            .filter_map(|(o, _)| o.clone())
            .chain(extra.iter().cloned())
            .collect();
        let pending = Unrecorded {
            deploy_id: deploy.id.clone(),
            image: followed_image(deploy, &app),
            message: format!("traffic switched to {}", describe_containers(&fresh)),
            summary: summary.clone(),
            retire: retired,
        };
        // The route holds the whole new set already: this records it (and
        // moves the route to the new hosts and timeouts of a settings
        // change; refused, the replicas roll back as from any failure).
        match self
            .cut_over(deploy, &app, set.values(), true, pending)
            .await
        {
            Ok(()) => new_containers.clear(),
            Err(CutoverError::Refused(f)) => {
                new_containers.clear();
                self.roll_back(deploy, &app, &old.id, &mut set, moved, &f.message)
                    .await;
                return Outcome::Failed(f);
            }
            Err(CutoverError::Unrecorded(f)) => {
                new_containers.clear();
                return Outcome::Unrecorded(f);
            }
        }
        // From here on the new version serves: nothing below fails the deploy.
        let replaced: Vec<ReplicaRow> = moved.into_iter().filter_map(|(o, _)| o).collect();
        self.remove_stopped(deploy, &replaced).await;
        self.retire(&app, &extra, &deploy.id).await;
        Outcome::Succeeded(summary)
    }

    /// Starts the new container of one replica (the `step`-th of `total`)
    /// and waits until it is healthy; returns it with its address.
    async fn start_one(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        run_ref: &str,
        (step, total, index): (usize, usize, u32),
        new_containers: &mut Vec<String>,
    ) -> Result<ReplicaRow, StepError> {
        let who = format!("replica {index}: ");
        let name = container_name(&app.name, &deploy.id, index);
        let message = format!("{who}starting container {name}");
        if step == 0 {
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!("rolling {total} replicas one at a time; {message}"),
            )?;
        } else {
            self.store.event(&deploy.id, &message)?;
        }
        let row = self
            .start_replica(deploy, app, run_ref, index, new_containers)
            .await?;
        if step == 0 {
            self.store.advance(
                &deploy.id,
                DeployStatus::HealthChecking,
                &health_message(app),
            )?;
        }
        let addr = self.check_replica(deploy, app, &row, &who).await?;
        Ok(ReplicaRow {
            addr: Some(addr),
            ..row
        })
    }

    /// An old container that left the route: drained, then stopped but
    /// kept, so a roll-back can start it again.
    async fn set_aside(&self, deploy: &DeployRow, app: &AppRow, old: &ReplicaRow, who: &str) {
        self.drain(app, old, &deploy.id, "old").await;
        let stopped = self
            .runtime
            .stop(&old.container_id, STOP_TIMEOUT_SECS)
            .await;
        let _ = self.store.event(
            &deploy.id,
            &match stopped {
                Ok(()) => format!(
                    "{who}stopped the old container {} (kept until the deploy ends)",
                    short(&old.container_id)
                ),
                Err(e) => format!(
                    "{who}could not stop the old container {}: {e:#}",
                    short(&old.container_id)
                ),
            },
        );
    }

    /// Undoes the replicas a rolling deploy moved, newest first: the old
    /// container starts again, takes its place back in the route, and the
    /// new one drains and goes. An old container that cannot come back
    /// leaves the new one serving in its place (recorded as serving), so the
    /// App keeps its replicas.
    pub(super) async fn roll_back(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        serving_id: &str,
        set: &mut BTreeMap<u32, ReplicaRow>,
        moved: Vec<(Option<ReplicaRow>, ReplicaRow)>,
        why: &str,
    ) {
        if moved.is_empty() {
            return;
        }
        let _ = self.store.event(
            &deploy.id,
            &format!(
                "{why}; rolling back: the {} replaced replica(s) return to the previous version",
                moved.len()
            ),
        );
        for (old, fresh) in moved.into_iter().rev() {
            let who = format!("replica {}: ", fresh.replica);
            // No longer part of a set that took the traffic, should the
            // server die before the roll-back ends.
            let _ = self
                .store
                .set_replica_role(&deploy.id, fresh.replica, ReplicaRole::New);
            let restored = match &old {
                Some(old) => match self.bring_back(deploy, app, old).await {
                    Ok(addr) => {
                        let _ = self.store.set_replica_addr(serving_id, old.replica, &addr);
                        Some(ReplicaRow {
                            addr: Some(addr),
                            ..old.clone()
                        })
                    }
                    Err(StepError(e)) => {
                        let _ = self.store.event(&deploy.id, &format!(
                            "{who}could not bring the old container {} back ({e}); the new container {} keeps serving in its place",
                            short(&old.container_id),
                            short(&fresh.container_id)
                        ));
                        let _ = self.store.put_replica(&ReplicaRow {
                            deploy_id: serving_id.to_string(),
                            ..fresh.clone()
                        });
                        continue;
                    }
                },
                None => None,
            };
            match &restored {
                Some(r) => set.insert(fresh.replica, r.clone()),
                None => set.remove(&fresh.replica),
            };
            if let Err(StepError(f)) = self.route_to(app, set.values()).await {
                let _ = self
                    .store
                    .event(&deploy.id, &format!("{who}restoring the route failed: {f}"));
            }
            if let Some(r) = &restored {
                let _ = self.store.event(
                    &deploy.id,
                    &format!(
                        "{who}the old container {} serves again",
                        short(&r.container_id)
                    ),
                );
            }
            self.drain(app, &fresh, &deploy.id, "new").await;
            let removed = self.runtime.remove(&fresh.container_id).await;
            let _ = self.store.event(
                &deploy.id,
                &match removed {
                    Ok(()) => format!(
                        "{who}removed the new container {}",
                        short(&fresh.container_id)
                    ),
                    Err(e) => format!(
                        "{who}could not remove the new container {}: {e:#}",
                        short(&fresh.container_id)
                    ),
                },
            );
        }
    }
}
